//! A web site on `http://127.0.0.1:<port>`, run by the test: the loopback
//! redirect URI of a native OAuth client (it records every request, so a
//! test sees each code the relay sends), and any page a test puts on it,
//! e.g. another site's form aimed at the relay.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Default)]
struct Shared {
    /// Path and query of each request, in order.
    requests: Vec<String>,
    /// Pages by path; any other path gets a short "received" page.
    pages: HashMap<String, String>,
}

/// A running loopback site; stops on drop.
pub struct LoopbackSite {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LoopbackSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LoopbackSite {
    pub async fn start() -> LoopbackSite {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let shared = serving.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(shared.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        LoopbackSite { addr, shared, task }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Serves `html` at `path` from now on.
    pub fn serve(&self, path: &str, html: &str) {
        self.shared
            .lock()
            .expect("lock")
            .pages
            .insert(path.to_owned(), html.to_owned());
    }

    /// Path and query of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().expect("lock").requests.clone()
    }
}

async fn answer(
    shared: Arc<Mutex<Shared>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let page = {
        let mut s = shared.lock().expect("lock");
        s.requests.push(target);
        s.pages.get(req.uri().path()).cloned()
    };
    let body = page.unwrap_or_else(|| {
        "<!doctype html><title>Received</title><p>The application got the answer.</p>".to_owned()
    });
    Ok(Response::builder()
        .header("content-type", "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("response"))
}
