//! A person at the relay's HTML pages, driven over HTTPS with a real client:
//! local accounts (`relay user add`), the session cookie the pages set, the
//! hidden CSRF fields of their forms, and the whole OAuth sign-in of an MCP
//! client (registration, authorize, sign in, consent, code exchange).

use std::io::Write as _;
use std::process::Stdio;

use crate::client::{full_body, Answer};
use crate::{HttpsClient, RelayProc};

/// `relay user add EMAIL` with the password on stdin; panics on failure.
pub fn add_user(relay: &RelayProc, email: &str, password: &str) {
    let mut child = std::process::Command::new(crate::procs::bin("relay"))
        .args(["user", "add", email, "--state-dir"])
        .arg(relay.state.path())
        // A node of a cluster: its database.
        .args(
            relay
                .extra_args
                .iter()
                .skip_while(|a| *a != "--database-url")
                .take(2),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run relay user add");
    writeln!(child.stdin.take().expect("stdin"), "{password}").expect("write password");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "relay user add {email}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `application/x-www-form-urlencoded`.
pub fn encode(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The value of a hidden (or any) input named `name` in a page, unescaped.
pub fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + marker.len();
    let end = start + page[start..].find('"').expect("closing quote");
    page[start..end]
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A browser: one cookie jar (the relay's session cookie), no redirects
/// followed on its own.
pub struct Browser {
    http: HttpsClient,
    base: String,
    cookie: Option<String>,
}

impl Browser {
    pub fn new(relay: &RelayProc) -> Browser {
        Browser::from_address(relay, None)
    }

    /// A browser whose connections come from `local` (another address of
    /// 127.0.0.0/8: another client for the relay's per-address limits).
    pub fn from_address(relay: &RelayProc, local: Option<std::net::IpAddr>) -> Browser {
        Browser {
            http: HttpsClient::from_address(&relay.ca(), false, local),
            base: relay.url(),
            cookie: None,
        }
    }

    /// The same browser (its cookie jar) sent to another node of a cluster
    /// (with the same CA), as a load balancer may: paths go to `relay` now.
    pub fn to_node(&mut self, relay: &RelayProc) {
        self.base = relay.url();
    }

    /// Forgets the session cookie: the next page starts a new session.
    pub fn clear_cookie(&mut self) {
        self.cookie = None;
    }

    fn keep_cookie(&mut self, a: &Answer) {
        if let Some(set) = a.headers.get("set-cookie") {
            let set = set.to_str().expect("ascii cookie");
            self.cookie = Some(set.split(';').next().expect("cookie").to_owned());
        }
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("https://") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    /// GET a page (a path, or a full URL).
    pub async fn get(&mut self, path_or_url: &str) -> Answer {
        let mut b = http::Request::builder()
            .method("GET")
            .uri(self.url(path_or_url));
        if let Some(c) = &self.cookie {
            b = b.header("cookie", c);
        }
        let a = self
            .http
            .fetch(b.body(full_body("")).expect("request"))
            .await;
        self.keep_cookie(&a);
        a
    }

    /// POST a form.
    pub async fn form(&mut self, path: &str, pairs: &[(&str, &str)]) -> Answer {
        let mut b = http::Request::builder()
            .method("POST")
            .uri(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(c) = &self.cookie {
            b = b.header("cookie", c);
        }
        let a = self
            .http
            .fetch(b.body(full_body(encode(pairs))).expect("request"))
            .await;
        self.keep_cookie(&a);
        a
    }

    /// POST JSON.
    pub async fn post_json(&mut self, path: &str, body: &serde_json::Value) -> Answer {
        let req = http::Request::builder()
            .method("POST")
            .uri(self.url(path))
            .header("content-type", "application/json")
            .body(full_body(body.to_string()))
            .expect("request");
        self.http.fetch(req).await
    }
}

/// Where a 303 goes.
pub fn location(a: &Answer) -> String {
    a.headers["location"]
        .to_str()
        .expect("ascii location")
        .to_owned()
}

/// An MCP client's whole OAuth sign-in for `route` as `email` (a fresh
/// client registration, PKCE, the login and consent forms): its access
/// token.
pub async fn oauth_access_token(
    relay: &RelayProc,
    email: &str,
    password: &str,
    route: &str,
) -> String {
    oauth_access_token_scoped(relay, email, password, route, "mcp").await
}

/// The redirect URI of the test's OAuth client.
pub const REDIRECT: &str = "http://127.0.0.1:53682/callback";
/// Its PKCE verifier (RFC 7636 Appendix B).
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// An authorization code of a fresh client registration, not redeemed yet.
pub struct CodeGrant {
    pub client_id: String,
    pub code: String,
    pub resource: String,
}

impl CodeGrant {
    /// The token request that redeems it.
    pub fn token_form(&self) -> Vec<(&str, &str)> {
        vec![
            ("grant_type", "authorization_code"),
            ("code", &self.code),
            ("code_verifier", VERIFIER),
            ("redirect_uri", REDIRECT),
            ("client_id", &self.client_id),
            ("resource", &self.resource),
        ]
    }
}

/// [`oauth_access_token`] asking for `scope` (e.g. `mcp:read`).
pub async fn oauth_access_token_scoped(
    relay: &RelayProc,
    email: &str,
    password: &str,
    route: &str,
    scope: &str,
) -> String {
    let grant = oauth_code(relay, email, password, route, scope).await;
    let mut b = Browser::new(relay);
    let t = b.form("/oauth/token", &grant.token_form()).await;
    assert_eq!(t.status, 200, "{}", t.text());
    t.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// The sign-in of [`oauth_access_token_scoped`] up to its code.
pub async fn oauth_code(
    relay: &RelayProc,
    email: &str,
    password: &str,
    route: &str,
    scope: &str,
) -> CodeGrant {
    oauth_code_from(relay, None, email, password, route, scope).await
}

/// [`oauth_code`] from the address `local` (of 127.0.0.0/8: another client
/// for the relay's per-address limits, e.g. on registrations).
pub async fn oauth_code_from(
    relay: &RelayProc,
    local: Option<std::net::IpAddr>,
    email: &str,
    password: &str,
    route: &str,
    scope: &str,
) -> CodeGrant {
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let mut b = Browser::from_address(relay, local);
    let reg = b
        .post_json(
            "/oauth/register",
            &serde_json::json!({"client_name": "e2e", "redirect_uris": [REDIRECT],
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
        ("scope", scope),
    ]);
    let page = b.get(&format!("/oauth/authorize?{query}")).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let body = page.text();
    let a = b
        .form(
            "/oauth/login",
            &[
                ("csrf", &hidden(&body, "csrf")),
                ("request", &hidden(&body, "request")),
                ("email", email),
                ("password", password),
            ],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.text());
    let consent = b.get(&location(&a)).await;
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
    CodeGrant {
        client_id,
        code,
        resource,
    }
}
