//! Serving one exchange from a local HTTP server.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use protocol::{BodyKind, ExchangeHead, FrameLimit, Header, ResponseHead};
use tokio::io::AsyncWriteExt;
use tunnel::{RecvHalf, SendHalf, TunnelBody};

use crate::error::AgentError;

type ReqBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Headers never forwarded to or from the local server: the hop-by-hop ones,
/// and `Host` (the local server gets its own).
fn is_local_hop(name: &str) -> bool {
    name == "host" || relay::headers::HOP_BY_HOP.contains(&name)
}

/// A local HTTP server that answers a route.
pub struct HttpUpstream {
    base: url::Url,
    client: Client<HttpConnector, ReqBody>,
}

impl HttpUpstream {
    /// `base` is where `/mcp/<route>` maps to, e.g. `http://127.0.0.1:8000/mcp`.
    pub fn new(base: &str) -> Result<Arc<HttpUpstream>, AgentError> {
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
        Ok(Arc::new(HttpUpstream { base: url, client }))
    }

    pub fn base(&self) -> &url::Url {
        &self.base
    }

    /// The local URL for a path below the route.
    fn target(&self, path_and_query: &str) -> String {
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
        target
    }

    /// Forwards `head` (and the request body from `recv`) to the local server
    /// and streams its answer into `send`.
    pub async fn serve(&self, head: ExchangeHead, mut send: SendHalf, recv: RecvHalf) {
        let target = self.target(&head.path);
        let body: ReqBody = match head.body {
            BodyKind::Empty => Empty::new().map_err(|never| match never {}).boxed_unsync(),
            BodyKind::Length(_) | BodyKind::Streaming => TunnelBody::new(recv, None).boxed_unsync(),
        };
        let mut req = Request::new(body);
        *req.method_mut() = match http::Method::from_bytes(head.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                return reply_error(
                    &mut send,
                    StatusCode::BAD_REQUEST,
                    "bad_method",
                    "invalid method",
                )
                .await
            }
        };
        *req.uri_mut() = match target.parse() {
            Ok(u) => u,
            Err(_) => {
                return reply_error(
                    &mut send,
                    StatusCode::BAD_REQUEST,
                    "bad_path",
                    "invalid path",
                )
                .await
            }
        };
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
                )
                .await;
            }
        };
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
        let head_frame = ResponseHead {
            status: parts.status.as_u16(),
            headers,
        };
        if protocol::write_frame("response", &mut send, &head_frame, FrameLimit::HEAD)
            .await
            .is_err()
        {
            return;
        }
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(data) = f.into_data() {
                        if send.write_all(&data).await.is_err() {
                            return;
                        }
                        // Flush per chunk: an SSE event must not wait for the next one.
                        if send.flush().await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    // Dropping `send` unfinished aborts the stream: the client
                    // sees an error rather than a body that looks complete.
                    tracing::warn!(request_id = head.request_id, error = %e, "local server's response body failed");
                    return;
                }
            }
        }
        let _ = send.finish().await;
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
async fn reply_error(send: &mut SendHalf, status: StatusCode, code: &str, message: &str) {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let head = ResponseHead {
        status: status.as_u16(),
        headers: vec![
            Header {
                name: "content-type".into(),
                value: b"application/json".to_vec(),
            },
            Header {
                name: "content-length".into(),
                value: body.len().to_string().into_bytes(),
            },
        ],
    };
    if protocol::write_frame("response", send, &head, FrameLimit::HEAD)
        .await
        .is_ok()
        && send.write_all(body.as_bytes()).await.is_ok()
    {
        let _ = send.finish().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_join_base_and_path() {
        let u = HttpUpstream::new("http://127.0.0.1:8000/mcp").expect("url");
        assert_eq!(u.target("/"), "http://127.0.0.1:8000/mcp");
        assert_eq!(u.target("/x/y?z=1"), "http://127.0.0.1:8000/mcp/x/y?z=1");
        assert_eq!(u.target("/?a=b"), "http://127.0.0.1:8000/mcp?a=b");
        let root = HttpUpstream::new("http://127.0.0.1:8000").expect("url");
        assert_eq!(root.target("/"), "http://127.0.0.1:8000/");
        assert_eq!(root.target("/sse"), "http://127.0.0.1:8000/sse");
        assert!(HttpUpstream::new("https://x").is_err());
        assert!(HttpUpstream::new("not a url").is_err());
    }
}
