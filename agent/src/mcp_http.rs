//! rmcp's Streamable HTTP service as the agent serves it (the built-in
//! SQLite server): a `DELETE` that ends an MCP session answers `200` for a
//! session this server knows and `404` for any other, as the stdio routes do.
//! (rmcp answers `202 Accepted` to every DELETE, known session or not, which
//! clients log as an unexpected answer.) Everything else is rmcp's.

use std::convert::Infallible;
use std::fmt::Display;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::SessionManager as _;
use rmcp::transport::StreamableHttpService;
use rmcp::ServerHandler;

/// The session header (`Mcp-Session-Id`).
const SESSION_HEADER: &str = "mcp-session-id";

/// [`StreamableHttpService`] with MCP's answers to a session's DELETE.
/// Dereferences to the rmcp service (its `config`).
pub struct McpHttpService<S> {
    inner: StreamableHttpService<S, LocalSessionManager>,
    sessions: Arc<LocalSessionManager>,
}

impl<S> McpHttpService<S>
where
    S: ServerHandler + Send + 'static,
{
    /// `inner` must have been built with `sessions` as its session manager.
    pub fn new(
        inner: StreamableHttpService<S, LocalSessionManager>,
        sessions: Arc<LocalSessionManager>,
    ) -> Self {
        McpHttpService { inner, sessions }
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
        let Some(session) = session else {
            return self.inner.handle(request).await;
        };
        if !self
            .sessions
            .has_session(&session.into())
            .await
            .unwrap_or(false)
        {
            return unknown_session();
        }
        let mut response = self.inner.handle(request).await;
        if response.status() == StatusCode::ACCEPTED {
            // Ended: nothing more to say.
            *response.status_mut() = StatusCode::OK;
            *response.body_mut() = Empty::new().boxed();
        }
        response
    }
}

impl<S> std::ops::Deref for McpHttpService<S> {
    type Target = StreamableHttpService<S, LocalSessionManager>;

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
