//! A scriptable local HTTP server standing in for the laptop's server.
//!
//! * `/echo…` — JSON with the method, path, headers and body it received.
//! * `/bytes/<n>` — streams `n` bytes of a known pattern.
//! * `/upload` — reads the body as it streams in; answers its length and checksum.
//! * `/sse` — an event stream; event `k+1` is only sent after the test calls
//!   [`Upstream::release`], so a test can prove each event arrived on its own.
//! * `/json-bytes/<n>` — `n` bytes as `application/json`, streamed (no length);
//!   `/json-sized/<n>` the same with a `Content-Length`; `/sse-big/<n>` one
//!   event of `n` bytes (a local MCP server answering with far too much).
//! * `/tools-list/<how>` — answers the `tools/list` request POSTed to it
//!   with the tools [`PUBLIC_TOOL`] and [`SECRET_TOOL`], written `<how>`:
//!   `json` and `sse` as a server should; `json-rpc` (media type
//!   `application/json-rpc`), `huge-number` (JSON with `1e400`, which
//!   `serde_json` refuses) and `bad-sse` (an event whose data does not
//!   parse) as a server that a relay cannot read. A `resources/list`,
//!   `resources/templates/list` or `prompts/list` request is answered the
//!   same way with its list: [`PUBLIC_RESOURCE`] and [`SECRET_RESOURCE`],
//!   [`PUBLIC_TEMPLATE`] and [`SECRET_TEMPLATE`], [`PUBLIC_PROMPT`] and
//!   [`SECRET_PROMPT`].
//! * `/cookie` — says which `Cookie` it got, and sets one (`Set-Cookie`).
//! * `/hang` — never answers.
//! * `/id` — this server's id (to tell replicas apart).
//!
//! `/?as=<path>` is served as `<path>` (an MCP route's requests all go to
//! its base URL).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Semaphore;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// The byte at offset `i` of every pattern stream.
pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// A running test upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    pub id: String,
    pub hits: Arc<AtomicU64>,
    sse_gate: Arc<Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    id: String,
    hits: Arc<AtomicU64>,
    sse_gate: Arc<Semaphore>,
}

impl Upstream {
    pub async fn start(id: &str) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicU64::new(0));
        let sse_gate = Arc::new(Semaphore::new(0));
        let shared = Arc::new(Shared {
            id: id.to_owned(),
            hits: hits.clone(),
            sse_gate: sse_gate.clone(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            id: id.to_owned(),
            hits,
            sse_gate,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets the SSE stream send its next event.
    pub fn release(&self) {
        self.sse_gate.add_permits(1);
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    shared.hits.fetch_add(1, Ordering::Relaxed);
    // `?as=/json-sized/10` at the server's root is served as that path: an
    // MCP route reaches only its base URL, never a path below it.
    let path = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("as="))
        .unwrap_or(req.uri().path())
        .to_owned();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let resp = if path.starts_with("/echo") {
        let method = req.method().to_string();
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let v = serde_json::json!({
            "id": shared.id,
            "method": method,
            "path": pq,
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        Response::builder()
            .header("content-type", "application/json")
            .header("x-upstream", shared.id.as_str())
            .body(full(v.to_string()))
            .expect("response")
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let total: u64 = n.parse().unwrap_or(0);
        let stream = futures::stream::unfold(0u64, move |sent| async move {
            if sent >= total {
                return None;
            }
            let n = (total - sent).min(64 * 1024);
            let chunk: Vec<u8> = (sent..sent + n).map(pattern).collect();
            Some((
                Ok::<_, std::io::Error>(Frame::data(Bytes::from(chunk))),
                sent + n,
            ))
        });
        Response::builder()
            .header("content-type", "application/octet-stream")
            .body(StreamBody::new(stream).boxed_unsync())
            .expect("response")
    } else if path == "/upload" {
        let mut body = req.into_body();
        let mut len = 0u64;
        let mut mismatches = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                for b in data.iter() {
                    if *b != pattern(len) {
                        mismatches += 1;
                    }
                    len += 1;
                }
            }
        }
        let v = serde_json::json!({ "len": len, "mismatches": mismatches });
        Response::builder()
            .header("content-type", "application/json")
            .body(full(v.to_string()))
            .expect("response")
    } else if let Some(n) = path.strip_prefix("/json-sized/") {
        let n: usize = n.parse().unwrap_or(0);
        Response::builder()
            .header("content-type", "application/json")
            .body(full(vec![b' '; n]))
            .expect("response")
    } else if let Some((kind, n)) = path
        .strip_prefix("/json-bytes/")
        .map(|n| ("json", n))
        .or_else(|| path.strip_prefix("/sse-big/").map(|n| ("sse", n)))
    {
        let total: u64 = n.parse().unwrap_or(0);
        let sse = kind == "sse";
        let stream = futures::stream::unfold(0u64, move |sent| async move {
            if sent >= total {
                return None;
            }
            let n = (total - sent).min(64 * 1024);
            let mut chunk = vec![b'x'; n as usize];
            if sse && sent == 0 {
                chunk[..6].copy_from_slice(b"data: ");
            }
            Some((
                Ok::<_, std::io::Error>(Frame::data(Bytes::from(chunk))),
                sent + n,
            ))
        });
        Response::builder()
            .header(
                "content-type",
                if sse {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            )
            .body(StreamBody::new(stream).boxed_unsync())
            .expect("response")
    } else if path == "/sse" {
        let gate = shared.sse_gate.clone();
        let stream = futures::stream::unfold(0u32, move |k| {
            let gate = gate.clone();
            async move {
                if k >= 3 {
                    return None;
                }
                if k > 0 {
                    gate.acquire().await.ok()?.forget();
                }
                let ev = format!("id: {k}\ndata: event {k}\n\n");
                Some((Ok::<_, std::io::Error>(Frame::data(Bytes::from(ev))), k + 1))
            }
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(StreamBody::new(stream).boxed_unsync())
            .expect("response")
    } else if let Some(kind) = path.strip_prefix("/tools-list/") {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        tools_list(kind, &body)
    } else if path == "/cookie" {
        let cookie = req
            .headers()
            .get("cookie")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        Response::builder()
            .header("content-type", "application/json")
            .header(
                "set-cookie",
                "__Host-drawbridge_session=planted; Path=/; Secure",
            )
            .header("x-upstream", shared.id.as_str())
            .body(full(serde_json::json!({ "cookie": cookie }).to_string()))
            .expect("response")
    } else if path == "/hang" {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        Response::new(full(""))
    } else if path == "/id" {
        Response::new(full(shared.id.clone()))
    } else {
        Response::builder()
            .status(404)
            .body(full("not found"))
            .expect("response")
    };
    Ok(resp)
}

/// The tool a test lets callers see.
pub const PUBLIC_TOOL: &str = "public_tool";
/// The tool a test hides from callers.
pub const SECRET_TOOL: &str = "secret_tool";

/// A resource a test lets callers see.
pub const PUBLIC_RESOURCE: &str = "public://notes/a";
/// A resource a test hides from callers.
pub const SECRET_RESOURCE: &str = "secret://keys/b";
/// A resource template a test lets callers see.
pub const PUBLIC_TEMPLATE: &str = "public://notes/{name}";
/// A resource template a test hides from callers.
pub const SECRET_TEMPLATE: &str = "secret://keys/{name}";
/// A prompt a test lets callers see.
pub const PUBLIC_PROMPT: &str = "public_prompt";
/// A prompt a test hides from callers.
pub const SECRET_PROMPT: &str = "secret_prompt";

/// The answer of `/tools-list/<how>` to the list request `body`.
fn tools_list(how: &str, body: &[u8]) -> Response<Body> {
    let request = serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
    let id = request
        .get("id")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let result = match request.get("method").and_then(|m| m.as_str()) {
        Some("resources/list") => serde_json::json!({"resources": [
            {"uri": PUBLIC_RESOURCE, "name": "a"},
            {"uri": SECRET_RESOURCE, "name": "b"},
        ]}),
        Some("resources/templates/list") => serde_json::json!({"resourceTemplates": [
            {"uriTemplate": PUBLIC_TEMPLATE, "name": "notes"},
            {"uriTemplate": SECRET_TEMPLATE, "name": "keys"},
        ]}),
        Some("prompts/list") => serde_json::json!({"prompts": [
            {"name": PUBLIC_PROMPT},
            {"name": SECRET_PROMPT},
        ]}),
        _ => serde_json::json!({"tools": [
            {"name": PUBLIC_TOOL, "inputSchema": {"type": "object"}},
            {"name": SECRET_TOOL, "inputSchema": {"type": "object"}},
        ]}),
    };
    let answer = serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
    let (media, body) = match how {
        "json" => ("application/json", answer),
        "sse" => (
            "text/event-stream",
            format!("event: message\ndata: {answer}\n\n"),
        ),
        "json-rpc" => ("application/json-rpc", answer),
        "huge-number" => (
            "application/json",
            answer.replace(
                "\"type\":\"object\"}",
                "\"type\":\"object\",\"maxItems\":1e400}",
            ),
        ),
        "bad-sse" => (
            "text/event-stream",
            format!("event: message\ndata: {answer}}}\n\n"),
        ),
        _ => {
            return Response::builder()
                .status(404)
                .body(full("no such answer"))
                .expect("response")
        }
    };
    Response::builder()
        .header("content-type", media)
        .body(full(body))
        .expect("response")
}
