//! Who may see the inspector: whoever holds the per-run secret the agent
//! printed. A browser trades `/?token=SECRET` for a cookie (HttpOnly,
//! SameSite=Strict, named after the port since cookies ignore ports);
//! scripts send `Authorization: Bearer SECRET`. A state change made with the
//! cookie must also carry the CSRF token the page reads from `/api/session`
//! in `X-Inspector-Csrf`, come from the page's own origin, and not be
//! marked cross-site by the browser. The `Host` must be the address the
//! inspector serves (no DNS rebinding).

use http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use http::HeaderMap;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The header a cookie-authenticated state change carries.
pub const CSRF_HEADER: &str = "x-inspector-csrf";

/// The secret of one run, and what derives from it.
#[derive(Clone)]
pub struct Secret {
    token: String,
    csrf: String,
    cookie_name: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// How a request proved it holds the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    Bearer,
    Cookie,
}

impl Secret {
    /// A fresh random secret for the inspector on `port`.
    pub fn generate(port: u16) -> Result<Secret, ring::error::Unspecified> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes)?;
        Ok(Secret::from_token(hex::encode(bytes), port))
    }

    fn from_token(token: String, port: u16) -> Secret {
        let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
        let csrf = hex::encode(hmac::sign(&key, b"drawbridge inspector csrf").as_ref());
        Secret {
            token,
            csrf,
            cookie_name: format!("drawbridge_inspector_{port}"),
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether `candidate` is the secret (in constant time).
    pub fn matches(&self, candidate: &str) -> bool {
        equal(self.token.as_bytes(), candidate.as_bytes())
    }

    /// The `Set-Cookie` value that stores the secret in the browser.
    pub fn set_cookie(&self) -> String {
        format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict",
            self.cookie_name, self.token
        )
    }

    /// How `headers` prove the secret, if they do.
    pub fn proof(&self, headers: &HeaderMap) -> Option<Proof> {
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|t| self.matches(t.trim())) {
            return Some(Proof::Bearer);
        }
        let cookie = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, _)| *name == self.cookie_name)
            .map(|(_, value)| value);
        cookie
            .is_some_and(|t| self.matches(t))
            .then_some(Proof::Cookie)
    }

    /// Whether a state change proven by `proof` may go on: a bearer token is
    /// never sent by a browser on its own; a cookie is, so it needs the CSRF
    /// token, the page's own origin (when the browser names one) and no
    /// cross-site mark.
    pub fn allows_change(&self, proof: Proof, headers: &HeaderMap) -> bool {
        if proof == Proof::Bearer {
            return true;
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let csrf_ok =
            header(CSRF_HEADER).is_some_and(|c| equal(c.as_bytes(), self.csrf.as_bytes()));
        let site_ok = header("sec-fetch-site").is_none_or(|s| s == "same-origin");
        let origin_ok = match (header(ORIGIN.as_str()), header(HOST.as_str())) {
            (None, _) => true,
            (Some(origin), Some(host)) => origin == format!("http://{host}"),
            (Some(_), None) => false,
        };
        csrf_ok && site_ok && origin_ok
    }
}

/// Whether the `Host` header names the inspector itself: its address, or
/// `localhost` on its port. `None` means any host (`--inspect-allow-remote`).
pub fn host_allowed(headers: &HeaderMap, allowed: Option<&[String]>) -> bool {
    let Some(allowed) = allowed else {
        return true;
    };
    headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| allowed.iter().any(|a| a.eq_ignore_ascii_case(h)))
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn proofs_and_changes() {
        let s = Secret::from_token("abc".into(), 4040);
        assert_eq!(s.proof(&headers(&[])), None);
        assert_eq!(s.proof(&headers(&[("authorization", "Bearer abd")])), None);
        assert_eq!(
            s.proof(&headers(&[("authorization", "Bearer abc")])),
            Some(Proof::Bearer)
        );
        assert_eq!(
            s.proof(&headers(&[(
                "cookie",
                "x=1; drawbridge_inspector_4040=abc"
            )])),
            Some(Proof::Cookie)
        );
        assert_eq!(
            s.proof(&headers(&[("cookie", "drawbridge_inspector_4041=abc")])),
            None
        );
        let csrf = s.csrf().to_owned();
        let same = headers(&[
            ("host", "127.0.0.1:4040"),
            ("origin", "http://127.0.0.1:4040"),
            ("sec-fetch-site", "same-origin"),
            (CSRF_HEADER, &csrf),
        ]);
        assert!(s.allows_change(Proof::Cookie, &same));
        let cross = headers(&[
            ("host", "127.0.0.1:4040"),
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(!s.allows_change(Proof::Cookie, &cross));
        let no_csrf = headers(&[("host", "127.0.0.1:4040")]);
        assert!(!s.allows_change(Proof::Cookie, &no_csrf));
        assert!(s.allows_change(Proof::Bearer, &cross));
    }

    #[test]
    fn hosts() {
        let allowed = vec!["127.0.0.1:4040".to_owned(), "localhost:4040".to_owned()];
        assert!(host_allowed(
            &headers(&[("host", "127.0.0.1:4040")]),
            Some(&allowed)
        ));
        assert!(!host_allowed(
            &headers(&[("host", "evil.example:4040")]),
            Some(&allowed)
        ));
        assert!(!host_allowed(&headers(&[]), Some(&allowed)));
        assert!(host_allowed(&headers(&[]), None));
    }
}
