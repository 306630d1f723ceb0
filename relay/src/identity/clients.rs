//! The metadata of a client registration (RFC 7591) of public clients
//! (served at `POST /oauth/register`), and the redirect-URI rules: which
//! URIs may be registered, and how a presented one is matched against them.

use url::Url;

const MAX_REDIRECT_URIS: usize = 10;
const MAX_URI_LEN: usize = 2000;
const MAX_NAME_LEN: usize = 200;

/// Schemes that can never be a redirect target.
const FORBIDDEN_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "file",
    "vbscript",
    "about",
    "blob",
    "ftp",
    "ws",
    "wss",
];

/// Why a redirect URI cannot be registered.
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_URI_LEN {
        return Err(format!("longer than {MAX_URI_LEN} characters"));
    }
    let url = Url::parse(uri).map_err(|e| format!("{uri:?} is not an absolute URI: {e}"))?;
    if url.fragment().is_some() {
        return Err(format!("{uri:?} has a fragment"));
    }
    match url.scheme() {
        "https" if url.host_str().is_none_or(str::is_empty) => Err(format!("{uri:?} has no host")),
        "http" if !is_loopback(&url) => Err(format!(
            "{uri:?}: plain http is allowed only for loopback hosts (127.0.0.1, [::1], localhost)"
        )),
        s if FORBIDDEN_SCHEMES.contains(&s) => Err(format!(
            "{uri:?}: the {s}: scheme cannot receive a redirect"
        )),
        // https with a host, http on loopback, or a native app's
        // private-use scheme (RFC 8252 §7.1): cursor://, vscode://…
        _ => Ok(()),
    }
}

/// Whether `url` names this machine (localhost, 127.0.0.0/8, [::1]).
pub fn is_loopback(url: &Url) -> bool {
    matches!(url.host(), Some(url::Host::Domain("localhost")))
        || matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
        || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
}

/// Whether `presented` matches the `registered` redirect URI: exactly, or,
/// for an http loopback URI, exactly but for the port (RFC 8252 §7.3).
pub fn redirect_matches(registered: &str, presented: &str) -> bool {
    if registered == presented {
        return true;
    }
    let (Ok(r), Ok(p)) = (Url::parse(registered), Url::parse(presented)) else {
        return false;
    };
    r.scheme() == "http"
        && p.scheme() == "http"
        && is_loopback(&r)
        && r.host() == p.host()
        && r.path() == p.path()
        && r.query() == p.query()
        && r.username() == p.username()
        && r.password() == p.password()
        && p.fragment().is_none()
}

/// Why registration metadata is refused (RFC 7591 §3.2.2).
#[derive(Debug, PartialEq, Eq)]
pub struct MetadataError {
    /// `invalid_redirect_uri` or `invalid_client_metadata`.
    pub code: &'static str,
    pub description: String,
}

/// The parts of a registration request (RFC 7591 §2) this relay keeps.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientMetadata {
    /// Each one passed [`check_redirect_uri`]; 1 to 10 of them.
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub client_name: Option<String>,
}

impl ClientMetadata {
    /// Parses and checks a registration request body.
    pub fn parse(body: &[u8]) -> Result<ClientMetadata, MetadataError> {
        let bad = |code: &'static str, description: String| MetadataError { code, description };
        let meta: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            Ok(_) => {
                return Err(bad(
                    "invalid_client_metadata",
                    "the body must be a JSON object".into(),
                ))
            }
            Err(e) => {
                return Err(bad(
                    "invalid_client_metadata",
                    format!("the body is not JSON: {e}"),
                ))
            }
        };
        let Some(uris) = meta["redirect_uris"].as_array().filter(|a| !a.is_empty()) else {
            return Err(bad(
                "invalid_redirect_uri",
                "redirect_uris must be a non-empty array".into(),
            ));
        };
        if uris.len() > MAX_REDIRECT_URIS {
            return Err(bad(
                "invalid_redirect_uri",
                format!("at most {MAX_REDIRECT_URIS} redirect_uris"),
            ));
        }
        let mut redirect_uris = Vec::with_capacity(uris.len());
        for u in uris {
            let Some(u) = u.as_str() else {
                return Err(bad(
                    "invalid_redirect_uri",
                    "redirect_uris must be strings".into(),
                ));
            };
            check_redirect_uri(u).map_err(|e| bad("invalid_redirect_uri", e))?;
            redirect_uris.push(u.to_owned());
        }
        match meta.get("token_endpoint_auth_method") {
            None | Some(serde_json::Value::Null) => {}
            Some(m) if m == "none" => {}
            Some(m) => {
                return Err(bad(
                    "invalid_client_metadata",
                    format!("token_endpoint_auth_method {m} is not supported: this relay registers public clients only (\"none\", with PKCE)"),
                ))
            }
        }
        let grant_types = match string_list(&meta, "grant_types") {
            Ok(Some(g)) => g,
            Ok(None) => vec!["authorization_code".to_owned(), "refresh_token".to_owned()],
            Err(e) => return Err(bad("invalid_client_metadata", e)),
        };
        if let Some(g) = grant_types
            .iter()
            .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
        {
            return Err(bad(
                "invalid_client_metadata",
                if g == common::device_grant::GRANT_TYPE {
                    format!(
                        "grant type {g:?} is not offered to registered clients (it serves `agent login` only); \
                         use authorization_code, refresh_token (sign in through a browser)"
                    )
                } else {
                    format!("grant type {g:?} is not supported (authorization_code, refresh_token)")
                },
            ));
        }
        match string_list(&meta, "response_types") {
            Ok(Some(r)) if r.iter().any(|r| r != "code") => {
                return Err(bad(
                    "invalid_client_metadata",
                    "only the response type \"code\" is supported".into(),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(bad("invalid_client_metadata", e)),
        }
        let client_name = match meta.get("client_name") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(n)) if n.chars().count() <= MAX_NAME_LEN => {
                Some(n.trim().to_owned()).filter(|n| !n.is_empty())
            }
            Some(_) => {
                return Err(bad(
                    "invalid_client_metadata",
                    format!("client_name must be a string of at most {MAX_NAME_LEN} characters"),
                ))
            }
        };
        Ok(ClientMetadata {
            redirect_uris,
            grant_types,
            client_name,
        })
    }
}

fn string_list(meta: &serde_json::Value, field: &str) -> Result<Option<Vec<String>>, String> {
    match meta.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{field} must be an array of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!("{field} must be an array of strings")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_that_may_be_registered() {
        for ok in [
            "https://claude.ai/api/mcp/auth_callback",
            "https://chatgpt.com/connector/oauth/abc123",
            "https://chatgpt.com/connector_platform_oauth_redirect",
            "http://localhost:6274/oauth/callback",
            "http://127.0.0.1:33418/callback",
            "http://[::1]/cb",
            "cursor://anysphere.cursor-mcp/oauth/callback",
            "vscode://vscode.mcp/oauth/callback",
        ] {
            assert_eq!(check_redirect_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://example.com/callback",
            "http://127.0.0.1.evil.example/cb",
            "javascript:alert(1)",
            "data:text/html,hi",
            "file:///etc/passwd",
            "https://claude.ai/cb#frag",
            "/relative/callback",
            "not a uri",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirect_uris_match_exactly_except_loopback_ports() {
        let r = "https://claude.ai/api/mcp/auth_callback";
        assert!(redirect_matches(r, r));
        assert!(!redirect_matches(
            r,
            "https://claude.ai/api/mcp/auth_callback/"
        ));
        assert!(!redirect_matches(
            r,
            "https://claude.ai/api/mcp/auth_callback?x=1"
        ));
        assert!(!redirect_matches(
            r,
            "https://claude.ai:444/api/mcp/auth_callback"
        ));
        assert!(!redirect_matches(
            r,
            "https://evil.example/api/mcp/auth_callback"
        ));
        let l = "http://127.0.0.1:3000/callback";
        assert!(redirect_matches(l, "http://127.0.0.1:49152/callback"));
        assert!(redirect_matches(l, "http://127.0.0.1/callback"));
        assert!(!redirect_matches(l, "http://127.0.0.1:49152/other"));
        assert!(!redirect_matches(l, "http://localhost:3000/callback"));
        assert!(!redirect_matches(l, "https://127.0.0.1:3000/callback"));
        assert!(!redirect_matches(
            l,
            "http://127.0.0.1:3000/callback?next=x"
        ));
        assert!(redirect_matches(
            "http://localhost/cb",
            "http://localhost:8080/cb"
        ));
        // Ports are free only on loopback.
        assert!(!redirect_matches(
            "https://app.example:8443/cb",
            "https://app.example:9443/cb"
        ));
        let c = "cursor://anysphere.cursor-mcp/oauth/callback";
        assert!(redirect_matches(c, c));
        assert!(!redirect_matches(
            c,
            "cursor://anysphere.cursor-mcp/oauth/other"
        ));
    }
}
