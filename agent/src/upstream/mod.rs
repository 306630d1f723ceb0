//! Serving one exchange: from a local HTTP server (`--http URL`), from an
//! MCP server built into the agent (`--sqlite FILE`), or from a stdio MCP
//! server run as a child process (`-- CMD ARGS...`, see [`crate::upstream::stdio`]).
//!
//! All kinds see the same thing: the relay's [`ExchangeHead`] and the
//! request body become an `http::Request`; the answer goes back as one
//! [`ResponseHead`] frame and then the body, written chunk by chunk as it
//! comes (flushed each time, so server-sent events are not held back).

mod mcp_http;
mod mcp_sessions;
mod per_identity;
mod response_cap;
pub mod sqlite;
pub mod stdio;

use std::fmt::Display;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use policy::route_path;
use protocol::{BodyKind, ExchangeHead, FrameLimit, Header, ResponseHead, UpstreamKind};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tunnel::SendHalf;

use crate::error::AgentError;
use crate::inspector::Tap;
use crate::upstream::per_identity::CallerId;
use crate::upstream::response_cap::{CapCounter, ResponseCap};
use crate::upstream::sqlite::db::SqliteDb;
use crate::upstream::sqlite::server::{HttpService, SqliteServer};
use crate::upstream::stdio::{StdioLimits, StdioUpstream};

/// A request body as the local server gets it.
pub type ReqBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Headers never forwarded to or from the local server: the hop-by-hop ones,
/// and `Host` (the local server gets its own).
fn is_local_hop(name: &str) -> bool {
    name == "host" || common::headers::HOP_BY_HOP.contains(&name)
}

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

/// The request for `head` with `body`, addressed to `uri`.
fn request(
    head: &ExchangeHead,
    body: ReqBody,
    uri: &str,
) -> Result<Request<ReqBody>, (StatusCode, &'static str, &'static str)> {
    let mut req = Request::new(body);
    *req.method_mut() = http::Method::from_bytes(head.method.as_bytes())
        .map_err(|_| (StatusCode::BAD_REQUEST, "bad_method", "invalid method"))?;
    *req.uri_mut() = uri
        .parse()
        .map_err(|_| (StatusCode::BAD_REQUEST, "bad_path", "invalid path"))?;
    for h in &head.headers {
        if is_local_hop(&h.name) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(&h.value),
        ) {
            req.headers_mut().append(n, v);
        }
    }
    if head.body == BodyKind::Empty {
        req.headers_mut().remove(http::header::CONTENT_LENGTH);
    }
    // Who asks, for the bounds per caller of the MCP servers the agent runs.
    req.extensions_mut()
        .insert(CallerId(head.identity.subject.clone()));
    Ok(req)
}

/// Streams `resp` into `send`: the head frame, then each body chunk as it
/// comes, flushed. Ends early, cleanly, when `end_early` is cancelled. On a
/// body error it returns with `send` unfinished: dropping it aborts the
/// stream, so the client sees an error rather than a body that looks
/// complete.
async fn send_response<B>(
    request_id: &str,
    send: &mut SendHalf,
    resp: Response<B>,
    end_early: Option<&CancellationToken>,
    tap: Option<&Tap>,
) where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Display,
{
    stream_response(request_id, send, resp, end_early, ResponseCap::None, tap).await
}

/// [`send_response`] within `cap`: a body that goes over it is cut off (the
/// stream aborted, so the client sees an error) and no more of it is read.
async fn send_capped<B>(
    request_id: &str,
    send: &mut SendHalf,
    resp: Response<B>,
    cap: ResponseCap,
    tap: Option<&Tap>,
) where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Display,
{
    stream_response(request_id, send, resp, None, cap, tap).await
}

async fn stream_response<B>(
    request_id: &str,
    send: &mut SendHalf,
    resp: Response<B>,
    end_early: Option<&CancellationToken>,
    cap: ResponseCap,
    tap: Option<&Tap>,
) where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Display,
{
    let mut counter = CapCounter::new(cap);
    let (parts, mut body) = resp.into_parts();
    let headers = parts
        .headers
        .iter()
        .filter(|(n, _)| !is_local_hop(n.as_str()))
        .map(|(n, v)| Header {
            name: n.as_str().to_owned(),
            value: v.as_bytes().to_vec(),
        })
        .collect();
    let mut headers: Vec<Header> = headers;
    if let Some(word) = tap.and_then(Tap::approval) {
        headers.push(Header {
            name: protocol::APPROVAL_HEADER.into(),
            value: word.into_bytes(),
        });
    }
    let head_frame = ResponseHead {
        status: parts.status.as_u16(),
        headers,
    };
    if let Some(tap) = tap {
        tap.status(head_frame.status);
    }
    let mut out = BytesMut::new();
    if protocol::encode_frame("response", &head_frame, FrameLimit::HEAD, &mut out).is_err() {
        return;
    }
    // The head goes out with as much of the body as is ready now, and with
    // the end of the stream if that was all of it: one write, so a small
    // answer leaves in one packet. A body not ready yet (an event stream)
    // does not hold the head back.
    let mut ended = false;
    while out.len() < COALESCE {
        let polled = Pin::new(&mut body).poll_frame(&mut Context::from_waker(Waker::noop()));
        match polled {
            Poll::Pending => break,
            Poll::Ready(None) => {
                ended = true;
                break;
            }
            Poll::Ready(Some(Ok(f))) => {
                if let Ok(data) = f.into_data() {
                    if !counter.admit(&data) {
                        tracing::warn!(
                            request_id,
                            ?cap,
                            "the local server's answer went over --max-response; cutting it off"
                        );
                        // The head, then an aborted stream (as below).
                        let _ = send.write_all(&out).await;
                        return;
                    }
                    if let Some(tap) = tap {
                        tap.response_chunk(&data);
                    }
                    out.extend_from_slice(&data);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(request_id, error = %e, "the upstream's response body failed");
                let _ = send.write_all(&out).await;
                return;
            }
        }
    }
    if send.write_all(&out).await.is_err() || send.flush().await.is_err() {
        return;
    }
    if ended {
        let _ = send.finish_acknowledged(crate::reply::ACK_WAIT).await;
        return;
    }
    let never = CancellationToken::new();
    let end_early = end_early.unwrap_or(&never);
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = end_early.cancelled() => break,
        };
        match frame {
            None => break,
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    if !counter.admit(&data) {
                        tracing::warn!(
                            request_id,
                            ?cap,
                            "the local server's answer went over --max-response; cutting it off"
                        );
                        return;
                    }
                    if let Some(tap) = tap {
                        tap.response_chunk(&data);
                    }
                    if send.write_all(&data).await.is_err() {
                        return;
                    }
                    // Flush per chunk: an SSE event must not wait for the next one.
                    if send.flush().await.is_err() {
                        return;
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(request_id, error = %e, "the upstream's response body failed");
                return;
            }
        }
    }
    // Wait for the relay's acknowledgement: an agent that stops closes its
    // connection once this task ends, and must not discard the tail.
    let _ = send.finish_acknowledged(crate::reply::ACK_WAIT).await;
}

/// What of a response body is written with its head at most (whatever of it
/// is ready at once).
const COALESCE: usize = 64 * 1024;

const NOT_BELOW: &str =
    "the MCP endpoint is the route's own URL (/mcp/<route>); nothing is served below it";

/// An MCP server running inside the agent (today: the built-in SQLite
/// server), served with rmcp's Streamable HTTP transport at the route's root.
pub struct McpUpstream {
    db: Arc<SqliteDb>,
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
        let service = SqliteServer::new(db.clone()).into_http_service(CancellationToken::new());
        McpUpstream { db, service, stop }
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

/// A local HTTP server that answers a route.
pub struct HttpUpstream {
    base: url::Url,
    client: Client<HttpConnector, ReqBody>,
    /// Cap on what the server may answer (`None`: `--plain-http`).
    max_response: Option<u64>,
}

impl HttpUpstream {
    /// `base` is where `/mcp/<route>` maps to, e.g. `http://127.0.0.1:8000/mcp`.
    pub fn new(base: &str) -> Result<HttpUpstream, AgentError> {
        let bad = |reason: &str| AgentError::UpstreamUrl {
            url: base.to_owned(),
            reason: reason.to_owned(),
        };
        let url = url::Url::parse(base).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "http" {
            return Err(bad("only http:// local servers are supported"));
        }
        if url.host_str().is_none() {
            return Err(bad("no host"));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(HttpUpstream {
            base: url,
            client,
            max_response: None,
        })
    }

    pub fn base(&self) -> &url::Url {
        &self.base
    }

    /// The local URL for a path below the route: never above the base
    /// (a path with a dot segment, or not starting with `/`, is refused
    /// whatever the gate said).
    fn target(&self, path_and_query: &str) -> Result<String, route_path::PathRefusal> {
        let path_only = path_and_query
            .split_once('?')
            .map_or(path_and_query, |(p, _)| p);
        route_path::check_path(path_only)?;
        if !path_and_query.starts_with('/') {
            return Err(route_path::PathRefusal::NotAbsolute(
                path_and_query.to_owned(),
            ));
        }
        let base = self.base.as_str();
        let (base_path, base_query) = match base.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (base, None),
        };
        let base_path = base_path.trim_end_matches('/');
        let mut target = if path_and_query == "/" {
            base_path.to_owned()
        } else if let Some(q) = path_and_query.strip_prefix("/?") {
            format!("{base_path}?{q}")
        } else {
            format!("{base_path}{path_and_query}")
        };
        if let (Some(q), false) = (base_query, target.contains('?')) {
            target.push('?');
            target.push_str(q);
        }
        if target.ends_with("://")
            || !target[target.find("://").map_or(0, |i| i + 3)..].contains('/')
        {
            target.push('/');
        }
        // Read back as a URL: the same server, and a path within the base's.
        let within = url::Url::parse(&target).is_ok_and(|t| {
            t.origin() == self.base.origin()
                && t.path().starts_with(self.base.path().trim_end_matches('/'))
        });
        if !within {
            return Err(route_path::PathRefusal::NotAbsolute(
                path_and_query.to_owned(),
            ));
        }
        Ok(target)
    }

    /// Forwards `head` and its body to the local server and streams its
    /// answer into `send`.
    pub async fn serve(
        &self,
        head: ExchangeHead,
        mut send: SendHalf,
        body: ReqBody,
        tap: Option<&Tap>,
    ) {
        let target = match self.target(&head.path) {
            Ok(t) => t,
            Err(refusal) => {
                tracing::warn!(request_id = head.request_id, path = head.path, %refusal, "refused a path that would leave the local server's base");
                let msg = refusal.to_string();
                return reply_error(&mut send, refusal.status(), refusal.code(), &msg, tap).await;
            }
        };
        let req = match request(&head, body, &target) {
            Ok(r) => r,
            Err((status, code, msg)) => {
                return reply_error(&mut send, status, code, msg, tap).await
            }
        };
        let resp = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(request_id = head.request_id, upstream = %self.base, error = %e, "local server unreachable");
                let msg = format!(
                    "the agent could not reach the local server at {}: {}",
                    self.base,
                    error_chain(&e)
                );
                return reply_error(
                    &mut send,
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    &msg,
                    tap,
                )
                .await;
            }
        };
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let cap = ResponseCap::for_response(self.max_response, content_type);
        if let (ResponseCap::Whole(max), Some(len)) =
            (cap, http_body::Body::size_hint(resp.body()).exact())
        {
            if len > max {
                tracing::warn!(request_id = head.request_id, upstream = %self.base, len, max, "the local server's answer is over --max-response");
                let msg = format!(
                    "the local MCP server answered with {len} bytes, over the agent's --max-response of {max}"
                );
                return reply_error(
                    &mut send,
                    StatusCode::BAD_GATEWAY,
                    "response_too_large",
                    &msg,
                    tap,
                )
                .await;
            }
        }
        send_capped(&head.request_id, &mut send, resp, cap, tap).await;
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Answers the exchange with an error produced by the agent itself.
async fn reply_error(
    send: &mut SendHalf,
    status: StatusCode,
    code: &str,
    message: &str,
    tap: Option<&Tap>,
) {
    let body = serde_json::json!({ "error": code, "message": message });
    if let Some(tap) = tap {
        tap.status(status.as_u16());
        tap.response_chunk(body.to_string().as_bytes());
    }
    crate::reply::json(send, status, &body).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_join_base_and_path() {
        let u = HttpUpstream::new("http://127.0.0.1:8000/mcp").expect("url");
        let t = |u: &HttpUpstream, p: &str| u.target(p).expect(p);
        assert_eq!(t(&u, "/"), "http://127.0.0.1:8000/mcp");
        assert_eq!(t(&u, "/x/y?z=1"), "http://127.0.0.1:8000/mcp/x/y?z=1");
        assert_eq!(t(&u, "/?a=b"), "http://127.0.0.1:8000/mcp?a=b");
        let root = HttpUpstream::new("http://127.0.0.1:8000").expect("url");
        assert_eq!(t(&root, "/"), "http://127.0.0.1:8000/");
        assert_eq!(t(&root, "/sse"), "http://127.0.0.1:8000/sse");
        assert!(HttpUpstream::new("https://x").is_err());
        assert!(HttpUpstream::new("not a url").is_err());
    }

    #[test]
    fn no_target_climbs_above_the_base() {
        let u = HttpUpstream::new("http://127.0.0.1:8000/api/v1").expect("url");
        for bad in [
            "/../admin",
            "/%2e%2e/admin",
            "/x/..%2f..%2fadmin",
            "@evil.example/x",
            "",
            "?q=1",
        ] {
            assert!(u.target(bad).is_err(), "{bad}");
        }
        let root = HttpUpstream::new("http://127.0.0.1:8000").expect("url");
        assert!(root.target("@evil.example/x").is_err());
        assert!(root.target(".evil.example/x").is_err());
        // A double slash stays on the local server, below the base.
        assert_eq!(
            u.target("//evil.example/x").expect("double slash"),
            "http://127.0.0.1:8000/api/v1//evil.example/x"
        );
    }
}
