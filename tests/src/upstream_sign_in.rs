//! An MCP client's OAuth sign-in at the relay where the person signs in at
//! an upstream identity provider (OpenID Connect or GitHub): registration,
//! the sign-in page's provider link, the provider, the relay's callback,
//! consent, and the code exchange.

use serde_json::json;

use crate::browser::{encode, hidden, location, Browser};
use crate::RelayProc;

const REDIRECT: &str = "http://127.0.0.1:53682/callback";
/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// How far a sign-in through the provider went.
pub enum SignIn {
    /// The MCP client got its access token.
    Token(String),
    /// The relay refused at its callback: the page's status and text.
    Refused(u16, String),
}

impl SignIn {
    /// The access token; panics with the page if the sign-in was refused.
    pub fn token(self) -> String {
        match self {
            SignIn::Token(t) => t,
            SignIn::Refused(status, page) => panic!("sign-in refused ({status}): {page}"),
        }
    }
}

/// Signs in for `route` with the sign-in page's link labelled `label`;
/// `at_provider` gets the URL the relay sent the browser to and returns the
/// URL the provider sends it back to (the relay's callback).
pub async fn sign_in(
    relay: &RelayProc,
    label: &str,
    route: &str,
    at_provider: impl AsyncFnOnce(String) -> String,
) -> SignIn {
    let mut b = Browser::new(relay);
    let reg = b
        .post_json(
            "/oauth/register",
            &json!({"client_name": "e2e", "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none"}),
        )
        .await;
    assert_eq!(reg.status, 201, "{}", reg.text());
    let client_id = reg.json()["client_id"]
        .as_str()
        .expect("client_id")
        .to_owned();
    let resource = relay.route_url(route);
    let query = encode(&[
        ("response_type", "code"),
        ("client_id", &client_id),
        ("redirect_uri", REDIRECT),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
        ("resource", &resource),
        ("scope", "mcp"),
        ("state", "client-state"),
    ]);
    let page = b.get(&format!("/oauth/authorize?{query}")).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let body = page.text();
    // No local accounts: the providers are the only way in.
    assert!(!body.contains("type=\"password\""), "{body}");
    let marker = format!(">{label}</a>");
    let end = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no link {label:?} on {body}"));
    let start = body[..end].rfind("href=\"").expect("the link's href") + "href=\"".len();
    let href = body[start..end].trim_end_matches('"').replace("&amp;", "&");
    let to_provider = b.get(&href).await;
    assert_eq!(to_provider.status, 303, "{}", to_provider.text());
    let back = at_provider(location(&to_provider)).await;
    let answer = b.get(&back).await;
    if answer.status != 303 {
        return SignIn::Refused(answer.status.as_u16(), answer.text());
    }
    // Replaying the provider's answer gets nothing: the pending sign-in
    // was used.
    let replay = b.get(&back).await;
    assert_eq!(replay.status, 400, "{}", replay.text());
    let consent = b.get(&location(&answer)).await;
    assert_eq!(consent.status, 200, "{}", consent.text());
    let body = consent.text();
    let a = b
        .form(
            "/oauth/consent",
            &[
                ("csrf", &hidden(&body, "csrf")),
                ("request", &hidden(&body, "request")),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.text());
    let to = url::Url::parse(&location(&a)).expect("redirect");
    let code = to
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no code in {to}"));
    let t = b
        .form(
            "/oauth/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", VERIFIER),
                ("redirect_uri", REDIRECT),
                ("client_id", &client_id),
                ("resource", &resource),
            ],
        )
        .await;
    assert_eq!(t.status, 200, "{}", t.text());
    SignIn::Token(
        t.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned(),
    )
}

/// A query parameter of `url`.
pub fn param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
