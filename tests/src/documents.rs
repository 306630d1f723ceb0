//! A small HTTPS server on loopback that serves fixed documents (client ID
//! metadata documents), with its own local CA, and counts its requests.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::TempDir;

/// One served answer.
#[derive(Clone)]
pub struct Doc {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Doc {
    /// A 200 JSON document.
    pub fn json(v: &serde_json::Value) -> Doc {
        Doc {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: v.to_string(),
        }
    }
}

type Docs = Arc<Mutex<HashMap<String, Doc>>>;
/// How long every answer waits before it is sent.
type Delay = Arc<Mutex<Duration>>;

pub struct DocServer {
    pub addr: SocketAddr,
    docs: Docs,
    hits: Arc<AtomicU64>,
    delay: Delay,
    dir: TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DocServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DocServer {
    /// Listens on 127.0.0.1, port 0, with a certificate from a fresh CA.
    pub async fn start() -> DocServer {
        let dir = TempDir::new("docs");
        let key =
            relay::certs::self_signed(dir.path(), &["127.0.0.1".to_owned()]).expect("certificate");
        let tls = tunnel::tls::server_config(key.chain, key.key, &[b"http/1.1"]).expect("tls");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let docs: Docs = Arc::default();
        let hits = Arc::new(AtomicU64::new(0));
        let delay: Delay = Arc::default();
        let (d, h, w) = (docs.clone(), hits.clone(), delay.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, docs, hits, delay) =
                    (acceptor.clone(), d.clone(), h.clone(), w.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        serve(docs.clone(), hits.clone(), delay.clone(), req)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        DocServer {
            addr,
            docs,
            hits,
            delay,
            dir,
            task,
        }
    }

    /// The URL of `path` (`/client.json`).
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// The CA (PEM) that issued the server's certificate.
    pub fn ca(&self) -> PathBuf {
        relay::certs::ca_path(self.dir.path())
    }

    pub fn put(&self, path: &str, doc: Doc) {
        self.docs.lock().expect("docs").insert(path.to_owned(), doc);
    }

    /// Every answer from now on waits `d` before it is sent (the request
    /// is counted on arrival).
    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().expect("delay") = d;
    }

    /// Requests served so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

async fn serve(
    docs: Docs,
    hits: Arc<AtomicU64>,
    delay: Delay,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    hits.fetch_add(1, Ordering::Relaxed);
    let wait = *delay.lock().expect("delay");
    tokio::time::sleep(wait).await;
    let doc = docs.lock().expect("docs").get(req.uri().path()).cloned();
    let doc = doc.unwrap_or(Doc {
        status: 404,
        headers: Vec::new(),
        body: "not found".into(),
    });
    let mut b = Response::builder().status(doc.status);
    for (k, v) in &doc.headers {
        b = b.header(k, v);
    }
    Ok(b.body(Full::new(Bytes::from(doc.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}
