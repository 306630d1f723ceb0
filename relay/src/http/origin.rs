//! Which browser origins may call `/mcp/<route>` (MCP 2025-11-25: a server
//! MUST validate `Origin`, and answer an invalid one 403).
//!
//! The rule:
//! * no `Origin` header: allowed (server-side clients such as ChatGPT, Claude
//!   and the SDKs send none; browsers always send one on cross-origin calls);
//! * the relay's own public origin (`--public-url`): allowed;
//! * `http` or `https` on a loopback host (`localhost`, `127.0.0.0/8`, `[::1]`),
//!   any port: allowed, for local tools such as MCP Inspector;
//! * each `--allow-origin ORIGIN`: allowed, compared exactly after
//!   normalisation (scheme and host lower-cased, default port dropped);
//! * `--allow-origin '*'`: every origin.
//!
//! Anything else (including the opaque origin `null`) is refused.

use std::net::IpAddr;

/// The origins a relay accepts.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins {
    exact: Vec<String>,
    any: bool,
}

/// An `--allow-origin` value that is not an origin.
#[derive(Debug, thiserror::Error)]
#[error("--allow-origin {value:?} is not an origin like https://app.example.com[:port] (or '*'): {reason}")]
pub struct InvalidOrigin {
    pub value: String,
    pub reason: String,
}

impl AllowedOrigins {
    /// The relay's public URL and the operator's `--allow-origin` values.
    pub fn new(public_url: &str, extra: &[String]) -> Result<AllowedOrigins, InvalidOrigin> {
        let mut allowed = AllowedOrigins::default();
        if let Some(own) = normalise(public_url) {
            allowed.exact.push(own);
        }
        for value in extra {
            if value.trim() == "*" {
                allowed.any = true;
                continue;
            }
            let invalid = |reason: &str| InvalidOrigin {
                value: value.clone(),
                reason: reason.to_owned(),
            };
            let url = url::Url::parse(value.trim()).map_err(|e| invalid(&e.to_string()))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid("the scheme must be http or https"));
            }
            if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
                return Err(invalid("an origin has no path, query or fragment"));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(invalid("an origin has no user name or password"));
            }
            allowed.exact.push(url.origin().ascii_serialization());
        }
        Ok(allowed)
    }

    /// The `Origin` of a request it is not allowed (as shown to a person,
    /// for the 403); `None` when it has none or an allowed one.
    pub fn refused(&self, headers: &http::HeaderMap) -> Option<String> {
        let origin = headers.get(http::header::ORIGIN)?;
        if origin.to_str().is_ok_and(|o| self.allows(o)) {
            return None;
        }
        Some(String::from_utf8_lossy(origin.as_bytes()).into_owned())
    }

    /// Whether a request carrying `Origin: origin` may proceed.
    pub fn allows(&self, origin: &str) -> bool {
        if self.any {
            return true;
        }
        let Some(normal) = normalise(origin) else {
            return false;
        };
        is_loopback(&normal) || self.exact.contains(&normal)
    }
}

/// `scheme://host[:port]` with the default port dropped, or `None` for
/// anything that is not an http(s) origin.
fn normalise(origin: &str) -> Option<String> {
    let url = url::Url::parse(origin.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let serialized = url.origin().ascii_serialization();
    (serialized != "null").then_some(serialized)
}

fn is_loopback(normal: &str) -> bool {
    let Ok(url) = url::Url::parse(normal) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(extra: &[&str]) -> AllowedOrigins {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        AllowedOrigins::new("https://relay.example.com", &extra).expect("valid")
    }

    #[test]
    fn own_origin_and_loopback_are_allowed_by_default() {
        let a = allowed(&[]);
        assert!(a.allows("https://relay.example.com"));
        assert!(a.allows("https://RELAY.example.com:443"));
        assert!(!a.allows("http://relay.example.com"));
        assert!(!a.allows("https://relay.example.com:8443"));
        assert!(a.allows("http://localhost:6274"));
        assert!(a.allows("https://localhost"));
        assert!(a.allows("http://127.0.0.1:5173"));
        assert!(a.allows("http://127.8.0.1"));
        assert!(a.allows("http://[::1]:3000"));
        assert!(!a.allows("http://localhost.evil.example"));
        assert!(!a.allows("https://evil.example"));
        assert!(!a.allows("null"));
        assert!(!a.allows("file://"));
        assert!(!a.allows("chrome-extension://abc"));
        assert!(!a.allows(""));
    }

    #[test]
    fn extra_origins_match_exactly_after_normalising() {
        let a = allowed(&["https://App.Example.com:443", "http://tool.example:8080"]);
        assert!(a.allows("https://app.example.com"));
        assert!(a.allows("http://tool.example:8080"));
        assert!(!a.allows("http://tool.example"));
        assert!(!a.allows("https://app.example.com.evil"));
        assert!(!a.allows("https://sub.app.example.com"));
    }

    #[test]
    fn a_star_allows_everything_only_when_given() {
        assert!(allowed(&["*"]).allows("https://anything.example"));
        assert!(allowed(&["*"]).allows("null"));
        assert!(!allowed(&[]).allows("https://anything.example"));
    }

    #[test]
    fn bad_allow_origin_values_are_refused() {
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "https://app.example.com/?q=1",
            "ftp://app.example.com",
            "https://user@app.example.com",
            "",
        ] {
            let err =
                AllowedOrigins::new("https://relay.example.com", &[bad.to_owned()]).expect_err(bad);
            assert!(err.to_string().contains("--allow-origin"), "{err}");
        }
        // A trailing slash is still just the origin.
        assert!(
            AllowedOrigins::new("https://r.example", &["https://a.example/".to_owned()])
                .expect("valid")
                .allows("https://a.example")
        );
    }
}
