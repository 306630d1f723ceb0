//! The local server every system reaches: the built-in SQLite MCP server (the
//! very code `agent connect --sqlite` runs, served here over plain HTTP at
//! `/mcp`), and `/bytes/<n>`, which streams `n` bytes for the bulk scenario.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_util::sync::CancellationToken;

use agent::{SqliteDb, SqliteLimits as Limits, SqliteServer};

type Body = UnsyncBoxBody<Bytes, Infallible>;
type Mcp = agent::SqliteHttpService;

/// Bytes per chunk of a `/bytes/<n>` stream.
const CHUNK: usize = 64 * 1024;

/// A running local server; stops when dropped.
pub struct LocalServer {
    pub addr: SocketAddr,
    /// How long the MCP service takes per request, when asked to keep it.
    pub times: Arc<ServiceTimes>,
    task: tokio::task::JoinHandle<()>,
}

/// The MCP service's own time per request (from the request head handed to
/// it to its response head), kept only between [`ServiceTimes::start`] and
/// [`ServiceTimes::take`].
#[derive(Default)]
pub struct ServiceTimes {
    on: AtomicBool,
    samples: Mutex<Vec<f64>>,
}

impl ServiceTimes {
    pub fn start(&self) {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.on.store(true, Ordering::Release);
    }

    /// The times kept since [`ServiceTimes::start`], in µs, sorted.
    pub fn take(&self) -> Vec<f64> {
        self.on.store(false, Ordering::Release);
        let mut v = std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()));
        v.sort_by(f64::total_cmp);
        v
    }

    fn keep(&self, since: Instant) {
        if self.on.load(Ordering::Acquire) {
            let us = since.elapsed().as_nanos() as f64 / 1000.0;
            self.samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(us);
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LocalServer {
    /// Serves the SQLite database at `db` (created with the sample data if
    /// missing) on 127.0.0.1, port chosen by the OS.
    pub async fn start(db: &Path) -> anyhow::Result<LocalServer> {
        let db = Arc::new(SqliteDb::open(db, false, Limits::default())?);
        // The very service `agent connect --sqlite` runs: a stateless tool
        // call answered by the server itself, anything else by rmcp.
        let server = SqliteServer::new(db);
        let mcp: Arc<(SqliteServer, Mcp)> = Arc::new((
            server.clone(),
            server.into_http_service(CancellationToken::new()),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the local server")?;
        let addr = listener.local_addr()?;
        let chunk = Bytes::from(vec![b'x'; CHUNK]);
        let times = Arc::new(ServiceTimes::default());
        let kept = times.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let _ = tcp.set_nodelay(true);
                let (mcp, chunk, kept) = (mcp.clone(), chunk.clone(), kept.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(mcp.clone(), chunk.clone(), kept.clone(), req)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(LocalServer { addr, times, task })
    }
}

async fn handle(
    mcp: Arc<(SqliteServer, Mcp)>,
    chunk: Bytes,
    times: Arc<ServiceTimes>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    if let Some(n) = path.strip_prefix("/bytes/") {
        let total: u64 = n.parse().unwrap_or(0);
        let stream = futures::stream::unfold(0u64, move |sent| {
            let chunk = chunk.clone();
            async move {
                if sent >= total {
                    return None;
                }
                let n = (total - sent).min(CHUNK as u64);
                Some((
                    Ok::<_, Infallible>(Frame::data(chunk.slice(..n as usize))),
                    sent + n,
                ))
            }
        });
        let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
        if let Ok(v) = http::HeaderValue::from_str(&total.to_string()) {
            resp.headers_mut().insert(http::header::CONTENT_LENGTH, v);
        }
        return Ok(resp);
    }
    if path == "/mcp" || path == "/mcp/" {
        let since = Instant::now();
        let (server, service) = &*mcp;
        let resp = if req.method() == http::Method::POST {
            // As the agent does: the body read whole, then answered here if
            // it is a stateless tool call, else handed to rmcp.
            let (parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            match agent::stateless_call::recognize(server, &parts.headers, &bytes) {
                Some(call) => agent::stateless_call::answer(server, call, None)
                    .await
                    .map(|b| b.boxed_unsync()),
                None => service
                    .handle(Request::from_parts(parts, Full::new(bytes)))
                    .await
                    .map(|b| b.boxed_unsync()),
            }
        } else {
            service.handle(req).await.map(|b| b.boxed_unsync())
        };
        times.keep(since);
        return Ok(resp);
    }
    let mut resp = Response::new(Full::new(Bytes::from_static(b"not found\n")).boxed_unsync());
    *resp.status_mut() = http::StatusCode::NOT_FOUND;
    Ok(resp)
}
