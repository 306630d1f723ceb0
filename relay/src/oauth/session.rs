//! The sign-in session of the browser that authorizes a client: a random id
//! in a `Secure; HttpOnly; SameSite=Lax` cookie (stored hashed), and the
//! CSRF token every form of the session must carry.

use http::{header, HeaderMap, HeaderValue};

use crate::state::RelayState;
use crate::store::oauth::Session;

/// `__Host-`: the browser keeps it only if Secure, host-only, with Path=/.
pub const COOKIE: &str = "__Host-drawbridge_session";

/// How long a sign-in lasts.
pub const TTL_SECS: i64 = 12 * 3600;

/// The session id the request's cookie carries.
pub fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// `resp` with the session cookie for `id` set.
pub fn with_cookie(
    mut resp: http::Response<crate::http::body::RespBody>,
    id: &str,
) -> http::Response<crate::http::body::RespBody> {
    if let Some(v) = set_cookie(id) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// The live session the request belongs to, with its id.
pub async fn current(state: &RelayState, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = cookie_id(headers)?;
    match state.store.session(&id).await {
        Ok(Some(s)) => Some((id, s)),
        Ok(None) => None,
        Err(e) => {
            tracing::error!(error = %e, "session lookup failed");
            None
        }
    }
}

/// The `Set-Cookie` value for a session id.
pub fn set_cookie(id: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; Max-Age={TTL_SECS}; Secure; HttpOnly; SameSite=Lax"
    ))
    .ok()
}

/// Whether a form's CSRF token is the session's.
pub fn csrf_ok(session: &Session, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| super::ct_eq(p.as_bytes(), session.csrf.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        assert_eq!(cookie_id(&h), None);
        h.append(
            header::COOKIE,
            HeaderValue::from_static("x=y; __Host-drawbridge_session=abc; z=1"),
        );
        assert_eq!(cookie_id(&h).as_deref(), Some("abc"));
        let v = set_cookie("abc").expect("value");
        let v = v.to_str().expect("ascii");
        for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(v.contains(attr), "{v}");
        }
        let s = Session {
            csrf: "t0k".into(),
            email: None,
        };
        assert!(csrf_ok(&s, Some("t0k")));
        assert!(!csrf_ok(&s, Some("t0K")));
        assert!(!csrf_ok(&s, None));
    }
}
