//! The relay's HTTP client towards an upstream identity provider (OpenID
//! Connect discovery, token and userinfo endpoints; GitHub's OAuth and API
//! endpoints): rustls (ring) with the web PKI, HTTP/1.1, a time limit and a
//! size limit on every answer. Plain http is refused, except to a loopback
//! address when the operator allowed it for development
//! (`--upstream-dev-allow-http-loopback`).
//!
//! It is also the `oauth2` crate's async HTTP client: [`UpstreamHttp::send`]
//! has the shape of `oauth2::AsyncHttpClient`.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use url::{Host, Url};

use crate::RelayError;

/// Time for one request, from connecting to the end of the answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
pub const MAX_ANSWER: usize = 256 * 1024;

/// Why a request to the identity provider failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamHttpError {
    #[error("{url}: only https URLs are allowed (http only to a loopback address, with --upstream-dev-allow-http-loopback)")]
    Insecure { url: String },
    #[error("{url}: {reason}")]
    Failed { url: String, reason: String },
    #[error("{url}: no answer within {}s", TIMEOUT.as_secs())]
    Timeout { url: String },
}

/// The client (cheap to clone).
#[derive(Clone)]
pub struct UpstreamHttp {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    allow_http_loopback: bool,
}

impl UpstreamHttp {
    pub fn new(allow_http_loopback: bool) -> Result<UpstreamHttp, RelayError> {
        let tls = tunnel::tls::client_config(None, &[])?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(UpstreamHttp {
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(https),
            allow_http_loopback,
        })
    }

    /// Whether the relay may talk to `url`: https, or http to loopback in
    /// development.
    pub fn check_url(&self, url: &Url) -> Result<(), UpstreamHttpError> {
        match url.scheme() {
            "https" => Ok(()),
            "http" if self.allow_http_loopback && is_loopback(url) => Ok(()),
            _ => Err(UpstreamHttpError::Insecure {
                url: url.to_string(),
            }),
        }
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &self,
        req: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, UpstreamHttpError> {
        let url_text = req.uri().to_string();
        let failed = |reason: String| UpstreamHttpError::Failed {
            url: url_text.clone(),
            reason,
        };
        let url = Url::parse(&url_text).map_err(|e| failed(e.to_string()))?;
        self.check_url(&url)?;
        let (mut parts, body) = req.into_parts();
        // GitHub's API refuses requests without one.
        parts
            .headers
            .entry(header::USER_AGENT)
            .or_insert(HeaderValue::from_static("drawbridge-relay"));
        let req = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| failed(chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| {
                    failed(format!(
                        "reading the answer (at most {MAX_ANSWER} bytes): {e}"
                    ))
                })?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        };
        match tokio::time::timeout(TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamHttpError::Timeout { url: url_text }),
        }
    }

    /// GETs a JSON document (with a bearer token, if given); any status but
    /// 200 is an error.
    pub async fn get_json(
        &self,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<serde_json::Value, UpstreamHttpError> {
        let failed = |reason: String| UpstreamHttpError::Failed {
            url: url.to_owned(),
            reason,
        };
        let mut b = http::Request::builder()
            .method("GET")
            .uri(url)
            .header(header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            b = b.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = b.body(Vec::new()).map_err(|e| failed(e.to_string()))?;
        let resp = self.send(req).await?;
        if resp.status() != http::StatusCode::OK {
            return Err(failed(format!(
                "answered {}: {}",
                resp.status(),
                String::from_utf8_lossy(&resp.body()[..resp.body().len().min(300)])
            )));
        }
        serde_json::from_slice(resp.body()).map_err(|e| failed(format!("not JSON: {e}")))
    }
}

/// The `oauth2` crate's code exchange goes through this client.
impl<'c> oauth2::AsyncHttpClient<'c> for UpstreamHttp {
    type Error = UpstreamHttpError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<oauth2::HttpResponse, UpstreamHttpError>>
                + Send
                + 'c,
        >,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// `url`'s host is a loopback address (or `localhost`).
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(a)) => a.is_loopback(),
        Some(Host::Ipv6(a)) => a.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// An error with its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    #[tokio::test]
    async fn plain_http_only_to_loopback_in_development() {
        let strict = UpstreamHttp::new(false).expect("client");
        let dev = UpstreamHttp::new(true).expect("client");
        assert!(strict.check_url(&url("https://idp.example.com/x")).is_ok());
        assert!(strict.check_url(&url("http://127.0.0.1:5/x")).is_err());
        assert!(dev.check_url(&url("http://127.0.0.1:5/x")).is_ok());
        assert!(dev.check_url(&url("http://[::1]:5/x")).is_ok());
        assert!(dev.check_url(&url("http://localhost:5/x")).is_ok());
        assert!(dev.check_url(&url("http://idp.example.com/x")).is_err());
        assert!(dev.check_url(&url("ftp://127.0.0.1/x")).is_err());
    }
}
