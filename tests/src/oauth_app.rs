//! The test as a native MCP client application doing OAuth against the
//! relay: it registers itself (dynamic client registration, RFC 7591) with
//! a loopback redirect URI, starts each authorization with a fresh PKCE
//! verifier (S256) and `state`, and exchanges the code it gets back.

use base64::Engine as _;
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::browser::{encode, Browser};
use crate::client::Answer;
use crate::RelayProc;

/// A registered client.
pub struct OAuthApp {
    pub client_id: String,
    pub redirect_uri: String,
    http: Browser,
}

/// One authorization under way: the URL to open in the browser and what
/// the application keeps until the answer comes back.
pub struct Authorization {
    pub url: String,
    pub verifier: String,
    pub state: String,
    pub resource: String,
}

/// 32 random bytes, base64url: a PKCE verifier (RFC 7636 §4.1) or a state.
fn random_token() -> String {
    let mut buf = [0u8; 32];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("system random number generator");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// The S256 challenge of a verifier (RFC 7636 §4.2).
fn s256(verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

impl OAuthApp {
    /// Registers `name` with `redirect_uri` at the relay's DCR endpoint.
    pub async fn register(relay: &RelayProc, name: &str, redirect_uri: &str) -> OAuthApp {
        let mut http = Browser::new(relay);
        let reg = http
            .post_json(
                "/oauth/register",
                &serde_json::json!({
                    "client_name": name,
                    "redirect_uris": [redirect_uri],
                    "token_endpoint_auth_method": "none",
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                }),
            )
            .await;
        assert_eq!(reg.status, 201, "{}", reg.text());
        let client_id = reg.json()["client_id"]
            .as_str()
            .expect("client_id")
            .to_owned();
        OAuthApp {
            client_id,
            redirect_uri: redirect_uri.to_owned(),
            http,
        }
    }

    /// A new authorization request for `resource` (a route's URL).
    pub fn authorize(&self, relay: &RelayProc, resource: &str, scope: &str) -> Authorization {
        let verifier = random_token();
        let state = random_token();
        let query = encode(&[
            ("response_type", "code"),
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("code_challenge", &s256(&verifier)),
            ("code_challenge_method", "S256"),
            ("resource", resource),
            ("scope", scope),
            ("state", &state),
        ]);
        Authorization {
            url: format!("{}/oauth/authorize?{query}", relay.url()),
            verifier,
            state,
            resource: resource.to_owned(),
        }
    }

    /// Exchanges `code` at the token endpoint.
    pub async fn exchange(&mut self, auth: &Authorization, code: &str) -> Answer {
        self.http
            .form(
                "/oauth/token",
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("code_verifier", &auth.verifier),
                    ("redirect_uri", &self.redirect_uri),
                    ("client_id", &self.client_id),
                    ("resource", &auth.resource),
                ],
            )
            .await
    }
}
