//! The relay as the OAuth 2.1 authorization server of its routes (the MCP
//! authorization spec): discovery ([`metadata`]), dynamic client registration
//! ([`register`]), the client a request names ([`client_lookup`]: registered
//! or described by its metadata document), the authorization code flow with
//! local accounts ([`authorize`], [`pages`], [`session`]; passwords are
//! checked by [`sign_in`]), the token endpoint
//! ([`token_endpoint`]) and revocation ([`revoke`]); the device grant of
//! `agent login` ([`device`], pages at `/device`); sign-in through an
//! upstream OpenID Connect provider or GitHub ([`upstream`]). Which function
//! serves which path and method is in one table, the axum router of
//! `router.rs`. What these endpoints keep in the shared state (clients'
//! metadata documents, accounts, password checks, upstream providers) is in
//! `crate::identity`; their rate limits are in `crate::limits`.
//!
//! Access tokens are opaque (`dboa_…`), stored hashed, and bound to exactly
//! one route's URL; the gateway checks them in `authenticate`.

pub mod authorize;
pub mod client_lookup;
pub mod device;
pub mod metadata;
pub mod pages;
pub mod pkce;
pub mod register;
pub mod resource;
pub mod revoke;
mod router;
pub mod scope;
pub mod session;
pub mod sign_in;
pub mod token_endpoint;
pub mod upstream;

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::http::body::{full, RespBody};
pub use crate::identity::ct_eq;
use crate::state::SharedState;

/// Largest form or JSON body the OAuth endpoints read.
const MAX_BODY: usize = 64 * 1024;

/// Whether the authorization server serves `path`.
pub fn serves(path: &str) -> bool {
    path.starts_with("/.well-known/")
        || path.starts_with("/oauth/")
        || path == "/device"
        || path.starts_with("/device/")
}

/// Serves one request to a discovery or OAuth endpoint.
pub async fn handle(
    state: &SharedState,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<RespBody> {
    let path = req.uri().path().to_owned();
    if req.method() == Method::OPTIONS {
        return cors(preflight());
    }
    req.extensions_mut().insert(state.clone());
    req.extensions_mut().insert(ConnectInfo(peer));
    let resp = crate::http::router::serve(&router::ROUTER, req).await;
    // The HTML pages are for the browser that signs in; everything else
    // may be read by browser-based MCP clients.
    if path.starts_with("/.well-known/")
        || matches!(
            path.as_str(),
            "/oauth/register" | "/oauth/token" | "/oauth/revoke" | "/oauth/device_authorization"
        )
    {
        cors(resp)
    } else {
        resp
    }
}

/// The parameters of a form (or query string). A parameter given twice is
/// an error (RFC 6749 §3.1).
#[derive(Debug, Default, Clone)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(bytes: &[u8]) -> Params {
        Params {
            pairs: url::form_urlencoded::parse(bytes).into_owned().collect(),
        }
    }

    /// The value of `name`; empty values count as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// The first parameter given more than once, if any.
    pub fn repeated(&self) -> Option<&str> {
        self.pairs.iter().enumerate().find_map(|(i, (k, _))| {
            self.pairs[..i]
                .iter()
                .any(|(p, _)| p == k)
                .then_some(k.as_str())
        })
    }
}

/// A request body of at most [`MAX_BODY`] bytes; the OAuth error to
/// answer otherwise.
pub struct Body(pub Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = Response<RespBody>;

    async fn from_request(req: axum::extract::Request, _: &S) -> Result<Self, Self::Rejection> {
        match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(c) => Ok(Body(c.to_bytes())),
            Err(e) => Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("could not read the request body (at most {MAX_BODY} bytes): {e}"),
            )),
        }
    }
}

/// An `application/x-www-form-urlencoded` body ([`Body`]); the OAuth error
/// to answer otherwise.
pub struct Form(pub Params);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Form {
    type Rejection = Response<RespBody>;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let Body(body) = Body::from_request(req, state).await?;
        Ok(Form(Params::parse(&body)))
    }
}

/// A JSON answer that no cache keeps (RFC 6749 §5.1).
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<RespBody> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// An OAuth error answer: `{"error": code, "error_description": text}`.
pub fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response<RespBody> {
    json(
        status,
        &serde_json::json!({ "error": code, "error_description": description }),
    )
}

/// An HTML page.
pub fn html(status: StatusCode, body: String) -> Response<RespBody> {
    page(status, body, None)
}

/// An HTML page (as [`html`]) whose forms end, through the relay's
/// redirects, at a client's `redirect_uri`: the sign-in and consent pages.
/// Browsers check `form-action` against every redirect that follows a form
/// submission (Chromium blocks the last hop otherwise), so that URI's origin
/// is allowed too.
pub fn html_to_client(status: StatusCode, body: String, redirect_uri: &str) -> Response<RespBody> {
    page(status, body, form_action_source(redirect_uri).as_deref())
}

fn page(status: StatusCode, body: String, form_target: Option<&str>) -> Response<RespBody> {
    const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'";
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The pages carry no script and must not be framed (clickjacking).
    let csp = match form_target {
        Some(t) => format!("{CSP} {t}; frame-ancestors 'none'"),
        None => format!("{CSP}; frame-ancestors 'none'"),
    };
    h.insert(
        "content-security-policy",
        HeaderValue::from_str(&csp).unwrap_or_else(|_| {
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            )
        }),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    resp
}

/// The CSP source that allows a redirect URI: its origin
/// (`http://127.0.0.1:53682`, `https://claude.ai`), or its scheme alone
/// (`cursor:`) for a native app's URI, or an IPv6 literal's host (which CSP
/// sources cannot name). `None` for anything that does not parse.
pub fn form_action_source(redirect_uri: &str) -> Option<String> {
    let url = url::Url::parse(redirect_uri).ok()?;
    let scheme_only = format!("{}:", url.scheme());
    match (url.origin(), url.host()) {
        (url::Origin::Tuple(..), Some(url::Host::Ipv6(_))) => Some(scheme_only),
        (origin @ url::Origin::Tuple(..), _) => Some(origin.ascii_serialization()),
        (url::Origin::Opaque(_), _) => Some(scheme_only),
    }
}

/// The page shown when the state store fails under a browser's request.
pub fn store_failed_page(e: impl std::fmt::Display) -> Response<RespBody> {
    tracing::error!(error = %e, "OAuth state store failed");
    html(
        StatusCode::INTERNAL_SERVER_ERROR,
        pages::error("Server error", "the relay's state store failed"),
    )
}

/// A 303 to `location`.
pub fn redirect(location: &str) -> Response<RespBody> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn preflight() -> Response<RespBody> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("Authorization, Content-Type, Accept, MCP-Protocol-Version"),
    );
    h.insert("access-control-max-age", HeaderValue::from_static("600"));
    resp
}

fn cors(mut resp: Response<RespBody>) -> Response<RespBody> {
    resp.headers_mut()
        .insert("access-control-allow-origin", HeaderValue::from_static("*"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_may_end_at_the_redirect_uris_origin() {
        for (uri, source) in [
            ("http://127.0.0.1:53682/callback", "http://127.0.0.1:53682"),
            ("http://localhost:8080/cb?x=1", "http://localhost:8080"),
            (
                "https://claude.ai/api/mcp/auth_callback",
                "https://claude.ai",
            ),
            (
                "https://chatgpt.com/connector/oauth/abc",
                "https://chatgpt.com",
            ),
            ("cursor://anysphere.cursor-mcp/oauth/callback", "cursor:"),
            ("http://[::1]:9000/cb", "http:"),
        ] {
            assert_eq!(form_action_source(uri).as_deref(), Some(source), "{uri}");
        }
        assert_eq!(form_action_source("not a uri"), None);
        let resp = html_to_client(
            StatusCode::OK,
            String::new(),
            "http://127.0.0.1:53682/callback",
        );
        let csp = resp.headers()["content-security-policy"]
            .to_str()
            .expect("ascii");
        assert!(
            csp.contains("form-action 'self' http://127.0.0.1:53682;"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        let plain = html(StatusCode::OK, String::new());
        assert!(plain.headers()["content-security-policy"]
            .to_str()
            .expect("ascii")
            .contains("form-action 'self';"));
    }

    #[test]
    fn params_know_repeats_and_empty_values() {
        let p = Params::parse(b"a=1&b=&c=x%20y&a=2");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), None);
        assert_eq!(p.get("c"), Some("x y"));
        assert_eq!(p.repeated(), Some("a"));
        assert_eq!(Params::parse(b"a=1&b=2").repeated(), None);
    }
}
