//! Connections to the other nodes, kept for the next forwarded request: one
//! pool of HTTP/1.1 connections over TLS per peer (keyed by its address),
//! each TLS session made for the relay's public name (the peers present the
//! relay's public certificate). An idle connection is closed after
//! [`IDLE`]; at most [`MAX_IDLE_PER_PEER`] idle ones are kept per peer.
//!
//! A request is sent again on another connection only when it was never
//! written to the one it was given (that connection turned out closed
//! before the request went out: a peer restarted, or one that closed an
//! idle connection): a request that may have reached a peer is never sent
//! twice.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;

/// How long connecting to a peer node (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle connection to a peer is closed after this long (well within the
/// peers' own idle timeout, so that they do not close one as it is used).
pub const IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per peer, at most.
pub const MAX_IDLE_PER_PEER: usize = 32;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request could not be sent to a peer, or its answer not read.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No connection to the peer (the request never left).
    #[error("connect: {0}")]
    Connect(String),
    /// The exchange failed on an established connection.
    #[error("HTTP: {0}")]
    Http(String),
    /// The peer's address does not make a request target.
    #[error("the request target: {0}")]
    Target(String),
}

/// Kept connections to the peers of this node.
pub struct PeerPool {
    client: Client<PeerConnector, Incoming>,
}

impl PeerPool {
    /// A pool whose connections verify the peers' certificates with `tls`
    /// for the name `server_name` (the relay's public host name), whatever
    /// address they are dialled at.
    pub fn new(tls: Arc<rustls::ClientConfig>, server_name: ServerName<'static>) -> PeerPool {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = HttpsConnector::new(
            http,
            tls,
            true,
            Arc::new(FixedServerNameResolver::new(server_name)),
        );
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(IDLE)
            .pool_max_idle_per_host(MAX_IDLE_PER_PEER)
            // Only a request that never went out is sent again (see above).
            .retry_canceled_requests(true)
            // The caller sets the host (the relay's public authority).
            .set_host(false)
            .build(PeerConnector { inner: https });
        PeerPool { client }
    }

    /// Sends `req` (its target a path and query) to the node at `peer`
    /// (`HOST:PORT`) on a kept connection, or a new one.
    pub async fn send(
        &self,
        peer: &str,
        mut req: Request<Incoming>,
    ) -> Result<Response<Incoming>, PeerError> {
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri: Uri = format!("https://{peer}{target}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| PeerError::Target(e.to_string()))?;
        *req.uri_mut() = uri;
        self.client.request(req).await.map_err(|e| {
            let why = causes(&e);
            if e.is_connect() {
                PeerError::Connect(why)
            } else {
                PeerError::Http(why)
            }
        })
    }
}

/// The causes of `e`, innermost last, without the client's own summary.
fn causes(e: &hyper_util::client::legacy::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// TCP and TLS to a peer, within [`CONNECT_TIMEOUT`] in all.
#[derive(Clone)]
struct PeerConnector {
    inner: HttpsConnector<HttpConnector>,
}

type PeerStream = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

impl tower::Service<Uri> for PeerConnector {
    type Response = PeerStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<PeerStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        Box::pin(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                Ok(connected) => connected,
                Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}").into()),
            }
        })
    }
}
