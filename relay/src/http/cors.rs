//! CORS for browser-based MCP clients (MCP Inspector, web apps): preflights
//! are answered without authentication, and every answer to an allowed
//! origin (401s, errors and event streams included) says so, and exposes the
//! headers an MCP client must read.
//!
//! Which origins are allowed is [`crate::http::origin`]'s rule; a disallowed one
//! is refused 403 on routes, and gets no CORS headers anywhere.

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use crate::http::body::RespBody;
use crate::http::origin::AllowedOrigins;

/// The request headers an MCP client sends.
pub const ALLOW_HEADERS: &str = "Authorization, Content-Type, Accept, MCP-Protocol-Version, \
     Mcp-Session-Id, Last-Event-ID, Mcp-Method, Mcp-Name";
/// The methods of the MCP endpoint.
pub const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// The response headers an MCP client reads.
pub const EXPOSE_HEADERS: &str = "WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version";
/// How long a browser may cache a preflight answer, in seconds.
pub const MAX_AGE: &str = "86400";

/// The request's `Origin`, if it has one that `allowed` accepts.
pub fn allowed_origin(allowed: &AllowedOrigins, headers: &HeaderMap) -> Option<HeaderValue> {
    headers
        .get(header::ORIGIN)
        .filter(|o| o.to_str().is_ok_and(|o| allowed.allows(o)))
        .cloned()
}

/// Whether the request is a CORS preflight (or any OPTIONS) on a route.
pub fn is_preflight(method: &Method) -> bool {
    method == Method::OPTIONS
}

/// The answer to a preflight: 204 with what may be sent. The CORS headers
/// themselves are added by [`decorate`], like on every other answer.
pub fn preflight() -> Response<RespBody> {
    let mut resp = Response::new(crate::http::body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE),
    );
    h.insert(header::ALLOW, HeaderValue::from_static(ALLOW_METHODS));
    resp
}

/// Marks an answer to an allowed `origin` as readable by that origin.
/// Every answer varies by `Origin`, whether or not the request had one.
pub fn decorate(headers: &mut HeaderMap, origin: Option<&HeaderValue>) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = origin else {
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_lists_methods_and_headers() {
        let mut resp = preflight();
        decorate(
            resp.headers_mut(),
            Some(&HeaderValue::from_static("http://localhost:6274")),
        );
        let h = resp.headers();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(h["access-control-allow-origin"], "http://localhost:6274");
        assert_eq!(h["access-control-allow-methods"], ALLOW_METHODS);
        for name in [
            "Authorization",
            "Mcp-Session-Id",
            "Last-Event-ID",
            "Mcp-Name",
        ] {
            assert!(ALLOW_HEADERS.contains(name));
        }
        assert_eq!(h["vary"], "Origin");
    }

    #[test]
    fn no_origin_no_allow_origin() {
        let mut h = HeaderMap::new();
        decorate(&mut h, None);
        assert!(h.get("access-control-allow-origin").is_none());
        assert_eq!(h["vary"], "Origin");
    }
}
