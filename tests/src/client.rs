//! An HTTPS client that trusts a relay's self-signed CA.

use std::path::Path;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A request body holding `bytes`.
pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A client for the relay's public side.
#[derive(Clone)]
pub struct HttpsClient {
    client: Client<HttpsConnector<HttpConnector>, Body>,
}

/// A buffered response.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

impl HttpsClient {
    /// `http2`: speak HTTP/2 (ALPN) instead of HTTP/1.1.
    pub fn new(ca: &Path, http2: bool) -> HttpsClient {
        HttpsClient::from_address(ca, http2, None)
    }

    /// As [`HttpsClient::new`], its connections made from `local` (any
    /// address of 127.0.0.0/8 reaches a relay on 127.0.0.1): another client
    /// address for per-address limits.
    pub fn from_address(ca: &Path, http2: bool, local: Option<std::net::IpAddr>) -> HttpsClient {
        let tls = tunnel::tls::client_config(Some(ca), &[]).expect("tls config");
        // TCP_NODELAY, as curl and real clients set it: without it every
        // small request waits ~40 ms for Nagle and delayed ACKs.
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        tcp.set_local_address(local);
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only();
        let https = if http2 {
            builder.enable_http2().wrap_connector(tcp)
        } else {
            builder.enable_http1().wrap_connector(tcp)
        };
        let mut b = Client::builder(TokioExecutor::new());
        if http2 {
            b.http2_only(true);
        }
        HttpsClient {
            client: b.build(https),
        }
    }

    pub async fn send(&self, req: Request<Body>) -> Response<Incoming> {
        self.client
            .request(req)
            .await
            .expect("request to the relay")
    }

    /// Sends a request and buffers the answer.
    pub async fn call(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut b = Request::builder().method(method).uri(url);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        self.fetch(b.body(full_body(body)).expect("request")).await
    }

    /// Sends a request and buffers the answer.
    pub async fn fetch(&self, req: Request<Body>) -> Answer {
        let (parts, body) = self.send(req).await.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.expect("response body").to_bytes(),
        }
    }

    /// Sends a request and buffers the answer; a failed connection or a
    /// cut body is an error rather than a panic.
    pub async fn try_fetch(&self, req: Request<Body>) -> Result<Answer, String> {
        let (parts, body) = self
            .client
            .request(req)
            .await
            .map_err(|e| e.to_string())?
            .into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn get(&self, url: &str, token: Option<&str>) -> Answer {
        self.call("GET", url, token, Bytes::new()).await
    }
}

/// The next `message` event's JSON on a legacy stream (comments skipped).
pub async fn next_message(body: &mut Incoming, text: &mut String) -> serde_json::Value {
    loop {
        if let Some(start) = text.find("event: message\n") {
            if let Some(len) = text[start..].find("\n\n") {
                let block = text[start..start + len].to_owned();
                text.replace_range(..start + len + 2, "");
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                return serde_json::from_str(&data.join("\n")).expect("message JSON");
            }
        }
        read_more(body, text, "a message event").await;
    }
}

/// Reads `body` on until `text` holds `want`.
pub async fn read_until(body: &mut Incoming, text: &mut String, want: &str) {
    while !text.contains(want) {
        read_more(body, text, want).await;
    }
}

/// Adds `body`'s next frame to `text`; panics, naming what it was
/// `waiting_for`, if none comes within 30 s or the stream ends first.
pub async fn read_more(body: &mut Incoming, text: &mut String, waiting_for: &str) {
    let frame = tokio::time::timeout(std::time::Duration::from_secs(30), body.frame())
        .await
        .unwrap_or_else(|_| panic!("{waiting_for:?} never arrived; got: {text:?}"))
        .unwrap_or_else(|| panic!("the stream ended before {waiting_for:?}; got: {text:?}"))
        .expect("frame");
    if let Ok(d) = frame.into_data() {
        text.push_str(&String::from_utf8_lossy(&d));
    }
}
