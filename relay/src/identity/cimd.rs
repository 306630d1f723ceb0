//! Client ID Metadata Documents: a client whose `client_id` is an https URL
//! is described by the JSON document at that URL, which the relay fetches,
//! checks like registration metadata, caches, and stores as the client.
//!
//! The fetch is guarded against server-side request forgery: https only; the
//! host is resolved here and every address it resolves to must be public
//! unicast ([`super::ssrf`]); the connection goes to an address that was
//! checked (no second resolution that could rebind); no redirects; at most
//! [`MAX_DOCUMENT`] bytes; at most [`FETCH_TIMEOUT`] for everything; and,
//! when configured, only hosts in an allow-list of domains.
//!
//! Fetching is limited per caller: the address that asks for a document not
//! in the cache spends one token of a bucket ([`FETCHES_BURST`], refilled
//! every [`FETCH_REFILL`]); over it, the request is refused with 429 and a
//! message saying when to retry. Concurrent requests for the same uncached
//! document share one fetch (single flight): the first starts it, the others
//! wait for its outcome and spend nothing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use url::{Host, Url};

pub use crate::config::oauth::CimdConfig;
use crate::limits::ratelimit::RateLimiter;
use crate::store::now;
use crate::store::oauth::OAuthClient;

use super::clients::ClientMetadata;
use super::ssrf;

/// Largest document read.
pub const MAX_DOCUMENT: usize = 5 * 1024;
/// Time for resolving, connecting, TLS and reading the whole document.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds of how long a fetched document is used before it is fetched again
/// (its `Cache-Control: max-age`, clamped; the minimum when it has none).
pub const MIN_TTL: Duration = Duration::from_secs(5 * 60);
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most documents cached at once; beyond, new ones are used uncached.
const MAX_CACHED: usize = 10_000;
/// Fetches of uncached documents one address may start at once…
pub const FETCHES_BURST: f64 = 10.0;
/// …and then one per this long.
pub const FETCH_REFILL: Duration = Duration::from_secs(6);

/// Why a client metadata document cannot be used. The text is shown to
/// the person signing in and returned as `invalid_client` by the token
/// endpoint.
#[derive(Debug, thiserror::Error)]
#[error("the client metadata document at {url} cannot be used: {reason}")]
pub struct CimdError {
    pub url: String,
    pub reason: String,
}

/// A caller that started too many document fetches.
#[derive(Debug, thiserror::Error)]
#[error(
    "too many client metadata documents were fetched for your address; try again in {} s",
    retry_after_secs(*.retry_after)
)]
pub struct FetchLimited {
    /// When the caller may start another fetch.
    pub retry_after: Duration,
}

impl FetchLimited {
    /// Whole seconds to wait (at least one), for `Retry-After`.
    pub fn retry_after_secs(&self) -> u64 {
        retry_after_secs(self.retry_after)
    }
}

fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

/// Why a client could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Store(#[from] crate::RelayError),
    #[error(transparent)]
    Document(#[from] CimdError),
    #[error(transparent)]
    Limited(#[from] FetchLimited),
}

struct Cached {
    client: OAuthClient,
    until: Instant,
}

/// One fetch in progress, shared by every request that needs its document.
type Flight = Arc<tokio::sync::OnceCell<Result<OAuthClient, String>>>;

/// The fetcher and its cache.
pub struct Cimd {
    config: CimdConfig,
    tls: tokio_rustls::TlsConnector,
    cache: Mutex<HashMap<String, Cached>>,
    /// Fetches in progress, by URL.
    flights: Mutex<HashMap<String, Flight>>,
    /// Fetches started per caller address.
    fetches: RateLimiter,
}

/// A request's part in a flight: leaves the flights table clean when the
/// fetch is done, or when the last request waiting for it gives up.
struct Boarding<'a> {
    flights: &'a Mutex<HashMap<String, Flight>>,
    url: &'a str,
    flight: Flight,
}

impl Drop for Boarding<'_> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        // Under the lock nobody else can board: the count is the table's
        // reference, ours, and those of the requests still waiting.
        let ours = flights
            .get(self.url)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight));
        if ours && (self.flight.initialized() || Arc::strong_count(&self.flight) <= 2) {
            flights.remove(self.url);
        }
    }
}

impl Cimd {
    pub fn new(config: CimdConfig) -> Result<Cimd, crate::RelayError> {
        let tls = tunnel::tls::client_config(config.extra_ca.as_deref(), &[b"http/1.1"])?;
        Ok(Cimd {
            config,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            cache: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            fetches: RateLimiter::new(FETCHES_BURST, 1.0 / FETCH_REFILL.as_secs_f64()),
        })
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The client described by the document at `url`: cached, fetched by
    /// a request already fetching it, or fetched and checked now, which
    /// `caller` pays for (see the module docs).
    pub async fn client(&self, url: &str, caller: IpAddr) -> Result<OAuthClient, LookupError> {
        if let Some(c) = self.cached(url) {
            return Ok(c);
        }
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            match flights.get(url) {
                Some(f) => f.clone(),
                None => {
                    self.fetches
                        .check(caller, Instant::now())
                        .map_err(|retry_after| FetchLimited { retry_after })?;
                    let f = Flight::default();
                    flights.insert(url.to_owned(), f.clone());
                    f
                }
            }
        };
        let boarding = Boarding {
            flights: &self.flights,
            url,
            flight,
        };
        let outcome = boarding
            .flight
            .get_or_init(|| self.fetch_and_cache(url))
            .await
            .clone();
        drop(boarding);
        outcome.map_err(|reason| {
            LookupError::Document(CimdError {
                url: url.to_owned(),
                reason,
            })
        })
    }

    /// Fetches and checks the document at `url`, and caches the client.
    async fn fetch_and_cache(&self, url: &str) -> Result<OAuthClient, String> {
        let (body, ttl) = tokio::time::timeout(FETCH_TIMEOUT, self.fetch(url))
            .await
            .map_err(|_| format!("fetching it took longer than {}s", FETCH_TIMEOUT.as_secs()))??;
        let client = document_client(url, &body)?;
        if let Ok(mut cache) = self.cache.lock() {
            // Expired entries go when the cache is written to.
            let t = Instant::now();
            cache.retain(|_, c| c.until > t);
            if cache.len() < MAX_CACHED {
                cache.insert(
                    url.to_owned(),
                    Cached {
                        client: client.clone(),
                        until: t + ttl,
                    },
                );
            }
        }
        Ok(client)
    }

    fn cached(&self, url: &str) -> Option<OAuthClient> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(url)
            .filter(|c| c.until > Instant::now())
            .map(|c| c.client.clone())
    }

    /// Fetches the document: its body and how long to use it.
    async fn fetch(&self, raw: &str) -> Result<(Bytes, Duration), String> {
        let url = check_url(raw)?;
        let host = url.host_str().unwrap_or_default().to_owned();
        if !self.config.allow_domains.is_empty() {
            let h = host.to_ascii_lowercase();
            if !self.config.allow_domains.iter().any(|d| {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                h == d || h.ends_with(&format!(".{d}"))
            }) {
                return Err(format!(
                    "its host {host} is not in the relay's allowed domains ({})",
                    self.config.allow_domains.join(", ")
                ));
            }
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = match url.host() {
            Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            _ => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| format!("its host {host} does not resolve: {e}"))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(format!("its host {host} has no addresses"));
        }
        // Every address must be public: a name that also resolves to an
        // internal address is refused, whichever one would be tried first.
        for a in &addrs {
            if let Some(why) = ssrf::blocked(a.ip(), self.config.allow_loopback) {
                return Err(format!(
                    "its host {host} resolves to {}, {why}; the relay fetches documents only from public addresses",
                    a.ip()
                ));
            }
        }
        let mut last = String::new();
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect(a).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("connecting to {a} failed: {e}"),
            }
        }
        let tcp = tcp.ok_or(last)?;
        let name = match url.host() {
            Some(Host::Ipv4(ip)) => ServerName::IpAddress(IpAddr::V4(ip).into()),
            Some(Host::Ipv6(ip)) => ServerName::IpAddress(IpAddr::V6(ip).into()),
            _ => ServerName::try_from(host.clone())
                .map_err(|e| format!("{host} is not a valid TLS server name: {e}"))?,
        };
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host} failed: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP with {host} failed: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", host),
            None => host.clone(),
        };
        let req = Request::get(path)
            .header(header::HOST, authority)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("drawbridge-relay/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("the request to {host} failed: {e}"))?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(format!(
                "it answered {status} (a redirect); the relay does not follow redirects for client metadata documents"
            ));
        }
        if status != StatusCode::OK {
            return Err(format!("it answered {status}, not 200 OK"));
        }
        let too_big = || format!("it is larger than {MAX_DOCUMENT} bytes");
        let declared = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_DOCUMENT as u64) {
            return Err(too_big());
        }
        let ttl = ttl(resp
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()));
        let body = Limited::new(resp.into_body(), MAX_DOCUMENT)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    too_big()
                } else {
                    format!("reading it failed: {e}")
                }
            })?
            .to_bytes();
        Ok((body, ttl))
    }
}

/// Whether `client_id` names a client metadata document rather than a
/// registered client (registered ids are `dbc_…`).
pub fn is_url_client_id(client_id: &str) -> bool {
    let lower = client_id.get(..8).map(str::to_ascii_lowercase);
    matches!(lower.as_deref(), Some("https://")) || client_id.starts_with("http://")
}

/// The checks on a document URL (before any network access).
fn check_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("it is not a URL: {e}"))?;
    if url.scheme() != "https" {
        return Err("client metadata documents must be served over https".into());
    }
    if url.as_str() != raw {
        return Err(format!(
            "the client_id is not in normalized form (it would be {:?})",
            url.as_str()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not carry credentials".into());
    }
    if url.fragment().is_some() {
        return Err("the URL must not have a fragment".into());
    }
    if url.path() == "/" {
        return Err("the URL must have a path".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(url)
}

/// How long a document may be used, from its `Cache-Control`.
pub fn ttl(cache_control: Option<&str>) -> Duration {
    let max_age = cache_control.and_then(|cc| {
        cc.split(',').find_map(|d| {
            let d = d.trim();
            if d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache") {
                return Some(0);
            }
            let (k, v) = d.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| v.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        })
    });
    Duration::from_secs(max_age.unwrap_or(0)).clamp(MIN_TTL, MAX_TTL)
}

/// Checks a fetched document: a JSON object naming itself by `url`, with
/// valid registration metadata and no client secret.
pub fn document_client(url: &str, body: &[u8]) -> Result<OAuthClient, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("it is not JSON: {e}"))?;
    let Some(obj) = doc.as_object() else {
        return Err("it is not a JSON object".into());
    };
    match obj.get("client_id").and_then(|v| v.as_str()) {
        Some(id) if id == url => {}
        Some(id) => {
            return Err(format!(
                "its client_id {id:?} is not the URL it was fetched from"
            ))
        }
        None => return Err("it has no client_id".into()),
    }
    for secret in ["client_secret", "client_secret_expires_at"] {
        if obj.contains_key(secret) {
            return Err(format!(
                "it contains {secret}: a public document cannot hold a secret"
            ));
        }
    }
    let meta = ClientMetadata::parse(body).map_err(|e| format!("{}: {}", e.code, e.description))?;
    Ok(OAuthClient {
        client_id: url.to_owned(),
        client_name: meta.client_name,
        redirect_uris: meta.redirect_uris,
        created_at: now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://app.example/oauth/client.json";

    #[test]
    fn documents_name_themselves() {
        let ok = format!(
            r#"{{"client_id":"{URL}","client_name":"App","redirect_uris":["http://127.0.0.1/cb"]}}"#
        );
        let c = document_client(URL, ok.as_bytes()).expect("valid");
        assert_eq!(c.client_id, URL);
        assert_eq!(c.client_name.as_deref(), Some("App"));
        let other = ok.replace(URL, "https://evil.example/client.json");
        assert!(document_client(URL, other.as_bytes())
            .unwrap_err()
            .contains("is not the URL it was fetched from"));
        assert!(document_client(URL, b"[1]")
            .unwrap_err()
            .contains("not a JSON object"));
        let secret = ok.replace("\"client_name\"", "\"client_secret\":\"s\",\"client_name\"");
        assert!(document_client(URL, secret.as_bytes())
            .unwrap_err()
            .contains("client_secret"));
        let bad_uri = ok.replace("http://127.0.0.1/cb", "javascript:alert(1)");
        assert!(document_client(URL, bad_uri.as_bytes())
            .unwrap_err()
            .starts_with("invalid_redirect_uri"));
    }

    #[test]
    fn urls_are_checked_before_fetching() {
        assert!(check_url(URL).is_ok());
        for bad in [
            "http://app.example/client.json",
            "https://app.example/",
            "https://user:pw@app.example/c.json",
            "https://app.example/c.json#x",
            "https://APP.example/c.json",
            "https://app.example/a/../c.json",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(is_url_client_id(URL));
        assert!(is_url_client_id("http://x/y"));
        assert!(!is_url_client_id("dbc_0123"));
    }

    #[test]
    fn cache_lifetimes_are_bounded() {
        assert_eq!(ttl(None), MIN_TTL);
        assert_eq!(ttl(Some("no-store")), MIN_TTL);
        assert_eq!(ttl(Some("public, max-age=3600")), Duration::from_secs(3600));
        assert_eq!(ttl(Some("max-age=10")), MIN_TTL);
        assert_eq!(ttl(Some("max-age=99999999")), MAX_TTL);
        assert_eq!(ttl(Some("max-age=junk")), MIN_TTL);
    }
}
