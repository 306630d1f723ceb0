//! Serving one exchange: from a local HTTP server (`--http URL`), from an
//! MCP server built into the agent (`--sqlite FILE`), or from a stdio MCP
//! server run as a child process (`-- CMD ARGS...`, see [`crate::upstream::stdio`]).
//!
//! All kinds see the same thing: the relay's [`ExchangeHead`] and the
//! request body become an `http::Request`; the answer goes back as one
//! [`protocol::ResponseHead`] frame and then the body, written chunk by chunk
//! as it comes (flushed each time, so server-sent events are not held back):
//! [`exchange`]. The kinds: [`http_server`], [`sqlite`] (through
//! [`mcp_http`]), [`stdio`]; bounds per caller in [`per_identity`] and
//! [`mcp_sessions`], the `--max-response` cap in [`response_cap`].

mod exchange;
mod http_server;
mod mcp_http;
mod mcp_sessions;
mod per_identity;
mod response_cap;
pub mod sqlite;
pub mod stdio;

use std::sync::Arc;

use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use protocol::{ExchangeHead, UpstreamKind};
use tokio_util::sync::CancellationToken;
use tunnel::SendHalf;

use crate::error::AgentError;
use crate::inspector::Tap;
pub use crate::upstream::exchange::ReqBody;
use crate::upstream::exchange::{reply_error, request, send_response};
use crate::upstream::http_server::HttpUpstream;
use crate::upstream::per_identity::CallerId;
use crate::upstream::sqlite::db::SqliteDb;
use crate::upstream::sqlite::server::{HttpService, SqliteServer};
use crate::upstream::sqlite::stateless_call;
use crate::upstream::stdio::{StdioLimits, StdioUpstream};

/// What serves a route.
pub enum Upstream {
    /// A local HTTP server.
    Http(Box<HttpUpstream>),
    /// An MCP server inside the agent, spoken to over Streamable HTTP.
    Mcp(McpUpstream),
    /// A stdio MCP server, one child process per MCP session.
    Stdio(StdioRoute),
}

/// A stdio MCP server behind the bridge, and when its GET streams end.
pub struct StdioRoute {
    bridge: StdioUpstream,
    stop: CancellationToken,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Http(h) => f.debug_tuple("Http").field(&h.base.as_str()).finish(),
            Upstream::Mcp(m) => f.debug_tuple("Mcp").field(&m.db).finish(),
            Upstream::Stdio(s) => f.debug_tuple("Stdio").field(&s.bridge).finish(),
        }
    }
}

impl Upstream {
    /// A local HTTP server at `base`, e.g. `http://127.0.0.1:8000/mcp`.
    pub fn http(base: &str) -> Result<Upstream, AgentError> {
        HttpUpstream::new(base).map(|h| Upstream::Http(Box::new(h)))
    }

    /// A local MCP server over HTTP at `base` whose answers are capped at
    /// `max_response` bytes (a JSON answer whole, an event stream per
    /// event; see [`crate::upstream::response_cap`]).
    pub fn http_mcp(base: &str, max_response: u64) -> Result<Upstream, AgentError> {
        let mut h = HttpUpstream::new(base)?;
        h.max_response = Some(max_response);
        Ok(Upstream::Http(Box::new(h)))
    }

    /// The built-in SQLite MCP server on `db`. Its long-lived GET streams
    /// end when `stop` is cancelled; requests in flight run to their end.
    pub fn sqlite(db: SqliteDb, stop: CancellationToken) -> Upstream {
        Upstream::Mcp(McpUpstream::sqlite(db, stop))
    }

    /// A stdio MCP server, `program args...`, run once per MCP session
    /// (within `limits`). Its long-lived GET
    /// streams end when `stop` is cancelled. The program must exist.
    pub fn stdio(
        program: String,
        args: Vec<String>,
        route: &str,
        limits: StdioLimits,
        stop: CancellationToken,
    ) -> Result<Upstream, AgentError> {
        let bridge = StdioUpstream::new(program, args, route, limits);
        bridge.check_command().map_err(AgentError::Config)?;
        Ok(Upstream::Stdio(StdioRoute { bridge, stop }))
    }

    /// Stops what the upstream runs (the stdio children) and waits for it.
    pub async fn shutdown(&self) {
        if let Upstream::Stdio(s) = self {
            s.bridge.shutdown().await;
        }
    }

    /// What the hello tells the relay about this upstream.
    pub fn kind(&self) -> UpstreamKind {
        match self {
            Upstream::Http(_) => UpstreamKind::Http,
            Upstream::Mcp(_) => UpstreamKind::Sqlite,
            Upstream::Stdio(_) => UpstreamKind::Stdio,
        }
    }

    /// The database behind a built-in SQLite server.
    pub fn sqlite_db(&self) -> Option<&SqliteDb> {
        match self {
            Upstream::Http(_) | Upstream::Stdio(_) => None,
            Upstream::Mcp(m) => Some(&m.db),
        }
    }

    /// Serves one exchange: `head` and its request body (already admitted by
    /// the [`crate::gate::Gate`]); the answer goes into `send`, and is shown
    /// to `tap` (`--inspect`) as it goes.
    pub async fn serve(
        &self,
        head: ExchangeHead,
        mut send: SendHalf,
        body: ReqBody,
        tap: Option<&Tap>,
    ) {
        match self {
            Upstream::Http(h) => h.serve(head, send, body, tap).await,
            Upstream::Mcp(m) => {
                let req = match request(&head, body, &head.path) {
                    Ok(r) => r,
                    Err((status, code, msg)) => {
                        return reply_error(&mut send, status, code, msg, tap).await
                    }
                };
                m.serve(&head, req, send, tap).await
            }
            Upstream::Stdio(s) => {
                if head.path != "/" {
                    return reply_error(
                        &mut send,
                        StatusCode::NOT_FOUND,
                        "not_found",
                        NOT_BELOW,
                        tap,
                    )
                    .await;
                }
                let req = match request(&head, body, &head.path) {
                    Ok(r) => r,
                    Err((status, code, msg)) => {
                        return reply_error(&mut send, status, code, msg, tap).await
                    }
                };
                let standalone_stream = req.method() == http::Method::GET;
                let resp = s.bridge.handle(req).await;
                let end_early = standalone_stream.then_some(&s.stop);
                send_response(&head.request_id, &mut send, resp, end_early, tap).await;
            }
        }
    }
}

const NOT_BELOW: &str =
    "the MCP endpoint is the route's own URL (/mcp/<route>); nothing is served below it";

/// An MCP server running inside the agent (today: the built-in SQLite
/// server), served with rmcp's Streamable HTTP transport at the route's root.
pub struct McpUpstream {
    db: Arc<SqliteDb>,
    /// The server itself, for the calls answered without rmcp's transport
    /// ([`stateless_call`]).
    server: SqliteServer,
    service: HttpService,
    /// When cancelled (the agent stops), the long-lived GET streams end.
    stop: CancellationToken,
}

impl McpUpstream {
    fn sqlite(db: SqliteDb, stop: CancellationToken) -> McpUpstream {
        let db = Arc::new(db);
        // rmcp's own token ends every session at once, in-flight calls
        // included: it is cancelled only when this upstream is dropped, so
        // that stopping the agent lets tool calls finish (the drain).
        let server = SqliteServer::new(db.clone());
        let service = server.clone().into_http_service(CancellationToken::new());
        McpUpstream {
            db,
            server,
            service,
            stop,
        }
    }

    async fn serve(
        &self,
        head: &ExchangeHead,
        mut req: Request<ReqBody>,
        mut send: SendHalf,
        tap: Option<&Tap>,
    ) {
        // The MCP endpoint is the route itself: https://relay/mcp/<route>.
        if req.uri().path() != "/" {
            return reply_error(
                &mut send,
                StatusCode::NOT_FOUND,
                "not_found",
                NOT_BELOW,
                tap,
            )
            .await;
        }
        req.headers_mut()
            .insert(http::header::HOST, HeaderValue::from_static("localhost"));
        if req.method() == http::Method::POST {
            // The gate has read the body whole: take it, answer a stateless
            // tool call here, or hand the same bytes on to rmcp.
            let (parts, body) = req.into_parts();
            let bytes = match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) => {
                    tracing::debug!(request_id = head.request_id, error = %e, "request body cut off");
                    return;
                }
            };
            if let Some(call) = stateless_call::recognize(&self.server, &parts.headers, &bytes) {
                let caller = parts.extensions.get::<CallerId>();
                let resp = stateless_call::answer(&self.server, call, caller).await;
                return send_response(&head.request_id, &mut send, resp, None, tap).await;
            }
            let body = Full::new(bytes)
                .map_err(|never| match never {})
                .boxed_unsync();
            req = Request::from_parts(parts, body);
        }
        let standalone_stream = req.method() == http::Method::GET;
        let resp = self.service.handle(req).await;
        // A GET is the long-lived server-to-client stream, with no request in
        // flight: when the agent stops, it ends at once instead of holding the
        // drain. POSTs (tool calls) run to their end.
        let end_early = standalone_stream.then_some(&self.stop);
        send_response(&head.request_id, &mut send, resp, end_early, tap).await;
    }
}

impl Drop for McpUpstream {
    fn drop(&mut self) {
        self.service.cancel();
    }
}
