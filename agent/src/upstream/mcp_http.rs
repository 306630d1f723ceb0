//! rmcp's Streamable HTTP service as the agent serves it (the built-in
//! SQLite server): a `DELETE` that ends an MCP session answers `200` for a
//! session this server knows and `404` for any other, as the stdio routes do.
//! (rmcp answers `202 Accepted` to every DELETE, known session or not, which
//! clients log as an unexpected answer.) rmcp handles each request on
//! behalf of its caller ([`crate::upstream::mcp_sessions::with_caller`]), so that the
//! session manager can bound the sessions per caller. Everything else is
//! rmcp's.

use std::convert::Infallible;
use std::fmt::Display;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::StreamableHttpService;
use rmcp::ServerHandler;

use crate::upstream::mcp_sessions;
use crate::upstream::per_identity::CallerId;

/// The session header (`Mcp-Session-Id`).
const SESSION_HEADER: &str = "mcp-session-id";

/// [`StreamableHttpService`] with MCP's answers to a session's DELETE.
/// Dereferences to the rmcp service (its `config`).
pub struct McpHttpService<S, M> {
    inner: StreamableHttpService<S, M>,
    sessions: Arc<M>,
}

impl<S, M> McpHttpService<S, M>
where
    S: ServerHandler + Send + 'static,
    M: SessionManager,
{
    /// `inner` must have been built with `sessions` as its session manager.
    pub fn new(inner: StreamableHttpService<S, M>, sessions: Arc<M>) -> Self {
        McpHttpService { inner, sessions }
    }

    /// Ends every session at once, in-flight calls included.
    pub fn cancel(&self) {
        self.inner.config.cancellation_token.cancel();
    }

    pub async fn handle<B>(&self, request: Request<B>) -> Response<BoxBody<Bytes, Infallible>>
    where
        B: Body + Send + 'static,
        B::Error: Display,
    {
        let session = (request.method() == Method::DELETE)
            .then(|| request.headers().get(SESSION_HEADER))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let caller = CallerId::of(&request).cloned();
        let Some(session) = session else {
            return mcp_sessions::with_caller(caller, self.inner.handle(request)).await;
        };
        if !self
            .sessions
            .has_session(&session.into())
            .await
            .unwrap_or(false)
        {
            return unknown_session();
        }
        let mut response = mcp_sessions::with_caller(caller, self.inner.handle(request)).await;
        if response.status() == StatusCode::ACCEPTED {
            // Ended: nothing more to say.
            *response.status_mut() = StatusCode::OK;
            *response.body_mut() = Empty::new().boxed();
        }
        response
    }
}

impl<S, M> std::ops::Deref for McpHttpService<S, M> {
    type Target = StreamableHttpService<S, M>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

fn unknown_session() -> Response<BoxBody<Bytes, Infallible>> {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": -32600,
            "message": "unknown or ended MCP session: initialize a new one",
        },
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
