//! The relay as OAuth 2.1 authorization server: the Python MCP SDK's OAuth
//! client signs in with a local account (dynamic registration, login and
//! consent forms, PKCE, resource, iss) and calls tools through the tunnel;
//! then the flow's edges, driven over plain HTTPS: discovery, wrong PKCE
//! verifier, replayed code, redirect URI mismatch, a token for another
//! route, revocation, refresh-token reuse, a missing CSRF token, and an
//! open-redirect attempt.

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use e2e::browser::{encode, hidden, location};
use e2e::client::{full_body, Answer};
use e2e::{AgentProc, HttpsClient, RelayProc, TempDir};

const EMAIL: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery";
const REDIRECT: &str = "http://127.0.0.1:53682/callback";
/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// `relay user add EMAIL` with the password on stdin.
fn add_user(relay: &RelayProc, email: &str, password: &str) -> (i32, String) {
    let mut child = std::process::Command::new(e2e::procs::bin("relay"))
        .args(["user", "add", email, "--state-dir"])
        .arg(relay.state.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run relay user add");
    writeln!(child.stdin.take().expect("stdin"), "{password}").expect("write password");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Setup {
    relay: RelayProc,
    http: HttpsClient,
    _agent: Option<AgentProc>,
    _dir: TempDir,
}

impl Setup {
    /// A relay with the local account; with `agent`, the built-in SQLite
    /// server serves route `db`, owned by that account.
    async fn new(agent: bool) -> Setup {
        Setup::with_args(agent, &[]).await
    }

    async fn with_args(agent: bool, relay_args: &[&str]) -> Setup {
        let relay = RelayProc::start(relay_args).await;
        let (code, err) = add_user(&relay, EMAIL, PASSWORD);
        assert_eq!(code, 0, "user add: {err}");
        let dir = TempDir::new("oauth");
        let agent = if agent {
            let db = dir.path().join("demo.db").display().to_string();
            Some(
                AgentProc::start_upstream(
                    &relay,
                    &relay.token(EMAIL, false),
                    "db",
                    &["--sqlite", &db],
                    "auto",
                )
                .await,
            )
        } else {
            None
        };
        let http = HttpsClient::new(&relay.ca(), false);
        Setup {
            relay,
            http,
            _agent: agent,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.relay.url())
    }

    async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: String,
        cookie: Option<&str>,
    ) -> Answer {
        let mut b = http::Request::builder()
            .method("POST")
            .uri(self.url(path))
            .header("content-type", content_type);
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        self.http
            .fetch(b.body(full_body(body)).expect("request"))
            .await
    }

    async fn get(&self, url: &str, cookie: Option<&str>) -> Answer {
        let mut b = http::Request::builder().method("GET").uri(url);
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        self.http
            .fetch(b.body(full_body("")).expect("request"))
            .await
    }

    async fn form(&self, path: &str, pairs: &[(&str, &str)], cookie: Option<&str>) -> Answer {
        self.post(
            path,
            "application/x-www-form-urlencoded",
            encode(pairs),
            cookie,
        )
        .await
    }

    async fn register(&self, redirect_uri: &str) -> String {
        let a = self
            .post(
                "/oauth/register",
                "application/json",
                serde_json::json!({
                    "client_name": "e2e <script>",
                    "redirect_uris": [redirect_uri],
                    "token_endpoint_auth_method": "none",
                })
                .to_string(),
                None,
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text());
        a.json()["client_id"]
            .as_str()
            .expect("client_id")
            .to_owned()
    }

    fn authorize_url(&self, client_id: &str, redirect_uri: &str, route: &str) -> String {
        format!(
            "{}?{}",
            self.url("/oauth/authorize"),
            encode(&[
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", redirect_uri),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
                ("resource", &self.relay.route_url(route)),
                ("scope", "mcp"),
                ("state", "xyz"),
            ])
        )
    }

    /// The browser's part: sign in and consent; returns the final redirect
    /// and whether the consent page was shown.
    async fn sign_in(&self, client_id: &str, route: &str) -> (url::Url, bool) {
        let page = self
            .get(&self.authorize_url(client_id, REDIRECT, route), None)
            .await;
        assert_eq!(page.status, 200, "{}", page.text());
        let cookie = session_cookie(&page);
        let body = page.text();
        let a = self
            .form(
                "/oauth/login",
                &[
                    ("csrf", &hidden(&body, "csrf")),
                    ("request", &hidden(&body, "request")),
                    ("email", EMAIL),
                    ("password", PASSWORD),
                ],
                Some(&cookie),
            )
            .await;
        assert_eq!(a.status, 303, "{}", a.text());
        let cookie = session_cookie(&a);
        let next = self
            .get(&self.url(location(&a).as_str()), Some(&cookie))
            .await;
        let consented = next.status != 303;
        let last = if !consented {
            next
        } else {
            assert_eq!(next.status, 200, "{}", next.text());
            let body = next.text();
            assert!(body.contains("Allow access?"), "{body}");
            // The client's name is shown, escaped.
            assert!(body.contains("e2e &lt;script&gt;"), "{body}");
            self.form(
                "/oauth/consent",
                &[
                    ("csrf", &hidden(&body, "csrf")),
                    ("request", &hidden(&body, "request")),
                    ("decision", "approve"),
                ],
                Some(&cookie),
            )
            .await
        };
        assert_eq!(last.status, 303, "{}", last.text());
        (
            url::Url::parse(&location(&last)).expect("redirect URL"),
            consented,
        )
    }

    async fn code(&self, client_id: &str, route: &str) -> String {
        let (to, _) = self.sign_in(client_id, route).await;
        assert!(to.as_str().starts_with(REDIRECT), "{to}");
        let q = query(&to);
        assert_eq!(q("state").as_deref(), Some("xyz"));
        assert_eq!(q("iss").as_deref(), Some(self.relay.url().as_str()));
        q("code").expect("code")
    }

    async fn exchange(
        &self,
        client_id: &str,
        code: &str,
        verifier: &str,
        redirect: &str,
    ) -> Answer {
        self.form(
            "/oauth/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("code_verifier", verifier),
                ("redirect_uri", redirect),
                ("client_id", client_id),
                ("resource", &self.relay.route_url("db")),
            ],
            None,
        )
        .await
    }

    async fn refresh(&self, client_id: &str, refresh_token: &str) -> Answer {
        self.form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", client_id),
            ],
            None,
        )
        .await
    }

    /// POSTs an MCP `initialize` to a route with a bearer token.
    async fn call_route(&self, route: &str, token: &str) -> Answer {
        let req = http::Request::builder()
            .method("POST")
            .uri(self.relay.route_url(route))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(full_body(
                serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "oauth-test", "version": "1"}}})
                .to_string(),
            ))
            .expect("request");
        self.http.fetch(req).await
    }

    /// Signs in and exchanges the code: (client_id, token response).
    async fn tokens(&self) -> (String, serde_json::Value) {
        let client_id = self.register(REDIRECT).await;
        let code = self.code(&client_id, "db").await;
        let a = self.exchange(&client_id, &code, VERIFIER, REDIRECT).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.headers["cache-control"], "no-store");
        (client_id, a.json())
    }
}

fn session_cookie(a: &Answer) -> String {
    let set = a.headers["set-cookie"].to_str().expect("ascii");
    for attr in ["Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(set.contains(attr), "{set}");
    }
    set.split(';').next().expect("cookie").to_owned()
}

fn query(u: &url::Url) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| {
        u.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

fn oauth_error(a: &Answer) -> String {
    a.json()["error"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_signs_in_with_a_local_account_and_calls_tools() {
    let s = Setup::new(true).await;
    let v = e2e::python::run_json(
        "oauth_client.py",
        &[
            s.relay.route_url("db").into(),
            s.relay.ca().into(),
            EMAIL.into(),
            PASSWORD.into(),
        ],
    )
    .await;
    assert_eq!(v["pages"], serde_json::json!(["login", "consent"]), "{v}");
    assert_eq!(v["issuer"], s.relay.url(), "{v}");
    assert!(
        v["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .any(|t| t == "read_query"),
        "{v}"
    );
    assert_eq!(v["read"]["is_error"], false, "{v}");
    assert_eq!(v["read"]["structured"]["rows"][0]["n"], 12, "{v}");
    // The SDK asks for the scopes of the 401 challenge; `mcp` is full use.
    assert_eq!(v["scope"], "mcp:read mcp", "{v}");
    let client_id = v["client_id"].as_str().expect("client_id");
    assert!(v["access_token"]
        .as_str()
        .expect("token")
        .starts_with("dboa_"));

    // The audit names the user and the OAuth client.
    let mut calls = Vec::new();
    for _ in 0..100 {
        let (code, out, err) = s.relay.admin(&["audit", "--json", "--decision", "allow"]);
        assert_eq!(code, 0, "{err}");
        calls = out
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
            .filter(|e| e["target"] == "read_query")
            .collect();
        if !calls.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let call = calls.first().expect("an audited read_query");
    assert_eq!(call["identity"], EMAIL, "{call}");
    assert_eq!(call["client"], client_id, "{call}");

    // The same token at the relay works for this route only (audience).
    let token = v["access_token"].as_str().expect("token");
    assert_eq!(s.call_route("db", token).await.status, 200);
    let other = s.call_route("other", token).await;
    assert_eq!(other.status, 401, "{}", other.text());
    let challenge = other.headers["www-authenticate"].to_str().expect("ascii");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("another resource"), "{challenge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_documents_name_one_issuer() {
    let s = Setup::new(false).await;
    let issuer = s.relay.url();
    // The 401 points at the route's protected-resource metadata.
    let a = s.call_route("db", "").await;
    assert_eq!(a.status, 401);
    let a = s
        .http
        .fetch(
            http::Request::builder()
                .method("POST")
                .uri(s.relay.route_url("db"))
                .header("content-type", "application/json")
                .body(full_body("{}"))
                .expect("req"),
        )
        .await;
    assert_eq!(a.status, 401);
    // The relay read the small body before answering, so the HTTP/1.1
    // connection stays usable for discovery (it is closed only when a body
    // could not be read through).
    assert!(
        a.headers.get("connection").is_none_or(|v| v != "close"),
        "{:?}",
        a.headers
    );
    let challenge = a.headers["www-authenticate"].to_str().expect("ascii");
    let prm_url = format!("{issuer}/.well-known/oauth-protected-resource/mcp/db");
    assert!(
        challenge.contains(&format!("resource_metadata=\"{prm_url}\"")),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"mcp:read mcp\""), "{challenge}");
    assert!(
        !challenge.contains("error="),
        "no token, no error: {challenge}"
    );

    let prm = s.get(&prm_url, None).await;
    assert_eq!(prm.status, 200);
    let prm = prm.json();
    assert_eq!(prm["resource"], s.relay.route_url("db"));
    assert_eq!(prm["authorization_servers"], serde_json::json!([issuer]));
    assert_eq!(
        prm["scopes_supported"],
        serde_json::json!(["mcp:read", "mcp"])
    );
    let root = s
        .get(&s.url("/.well-known/oauth-protected-resource"), None)
        .await;
    assert_eq!(root.status, 200);
    assert_eq!(
        root.json()["authorization_servers"],
        serde_json::json!([issuer])
    );

    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let a = s.get(&s.url(path), None).await;
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(a.headers["access-control-allow-origin"], "*");
        let m = a.json();
        assert_eq!(m["issuer"], issuer, "{path}");
        assert_eq!(
            m["code_challenge_methods_supported"],
            serde_json::json!(["S256"])
        );
        assert_eq!(m["authorization_response_iss_parameter_supported"], true);
        assert_eq!(
            m["scopes_supported"],
            serde_json::json!(["mcp:read", "mcp"])
        );
        assert_eq!(
            m["grant_types_supported"],
            serde_json::json!(["authorization_code", "refresh_token"])
        );
        assert_eq!(
            m["token_endpoint_auth_methods_supported"],
            serde_json::json!(["none"])
        );
        for ep in ["authorization", "token", "registration", "revocation"] {
            let u = m[format!("{ep}_endpoint")].as_str().expect("endpoint");
            assert!(u.starts_with(&format!("{issuer}/oauth/")), "{ep}: {u}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_refuses_unsafe_redirect_uris() {
    let s = Setup::new(false).await;
    for (meta, error) in [
        (
            serde_json::json!({"redirect_uris": ["http://evil.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            serde_json::json!({"redirect_uris": ["javascript:alert(1)"]}),
            "invalid_redirect_uri",
        ),
        (
            serde_json::json!({"redirect_uris": []}),
            "invalid_redirect_uri",
        ),
        (
            serde_json::json!({"client_name": "x"}),
            "invalid_redirect_uri",
        ),
        (
            serde_json::json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic"}),
            "invalid_client_metadata",
        ),
        (
            serde_json::json!({"redirect_uris": [REDIRECT], "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
        (
            serde_json::json!(["not", "an", "object"]),
            "invalid_client_metadata",
        ),
    ] {
        let a = s
            .post(
                "/oauth/register",
                "application/json",
                meta.to_string(),
                None,
            )
            .await;
        assert_eq!(a.status, 400, "{meta}: {}", a.text());
        assert_eq!(oauth_error(&a), error, "{meta}");
    }
    // Native apps' custom schemes and hosted callbacks register.
    for uri in [
        "cursor://anysphere.cursor-mcp/oauth/callback",
        "https://claude.ai/api/mcp/auth_callback",
    ] {
        s.register(uri).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_need_the_right_verifier_and_work_once() {
    let s = Setup::new(true).await;
    let client_id = s.register(REDIRECT).await;

    // Wrong PKCE verifier.
    let code = s.code(&client_id, "db").await;
    let wrong = "x".repeat(43);
    let a = s.exchange(&client_id, &code, &wrong, REDIRECT).await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(oauth_error(&a), "invalid_grant");
    assert!(a.text().contains("PKCE"), "{}", a.text());

    // Consent is remembered: the second sign-in skips the consent page;
    // another client is asked again.
    let (to, consented) = s.sign_in(&client_id, "db").await;
    assert!(!consented);
    let code = query(&to)("code").expect("code");
    let other_client = s.register(REDIRECT).await;
    assert!(s.sign_in(&other_client, "db").await.1);
    // Redirect URI differs from the authorization request's.
    let a = s
        .exchange(&client_id, &code, VERIFIER, "http://127.0.0.1:53682/other")
        .await;
    assert_eq!(oauth_error(&a), "invalid_grant", "{}", a.text());

    // A good exchange, then the same code again: refused, and the tokens
    // issued from it are revoked.
    let code = s.code(&client_id, "db").await;
    let a = s.exchange(&client_id, &code, VERIFIER, REDIRECT).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let token = a.json()["access_token"].as_str().expect("token").to_owned();
    assert_eq!(s.call_route("db", &token).await.status, 200);
    let replay = s.exchange(&client_id, &code, VERIFIER, REDIRECT).await;
    assert_eq!(replay.status, 400);
    assert_eq!(oauth_error(&replay), "invalid_grant");
    let a = s.call_route("db", &token).await;
    assert_eq!(a.status, 401, "{}", a.text());
    assert!(a.text().contains("revoked"), "{}", a.text());

    // Other token-endpoint errors, as RFC 6749 names them.
    let a = s
        .form(
            "/oauth/token",
            &[("grant_type", "password"), ("client_id", &client_id)],
            None,
        )
        .await;
    assert_eq!(oauth_error(&a), "unsupported_grant_type");
    let a = s.exchange("dbc_unknown", &code, VERIFIER, REDIRECT).await;
    assert_eq!(a.status, 401);
    assert_eq!(oauth_error(&a), "invalid_client");
    let a = s
        .form("/oauth/token", &[("client_id", &client_id)], None)
        .await;
    assert_eq!(oauth_error(&a), "invalid_request");
    let a = s
        .post("/oauth/token", "application/json", "{}".into(), None)
        .await;
    assert_eq!(oauth_error(&a), "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_and_a_reuse_revokes_the_family() {
    let s = Setup::new(true).await;
    let (client_id, t1) = s.tokens().await;
    let r1 = t1["refresh_token"].as_str().expect("refresh").to_owned();
    let a = s.refresh(&client_id, &r1).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let t2 = a.json();
    let r2 = t2["refresh_token"].as_str().expect("refresh").to_owned();
    let access2 = t2["access_token"].as_str().expect("access").to_owned();
    assert_ne!(r1, r2);
    assert_eq!(s.call_route("db", &access2).await.status, 200);

    // The old refresh token again: refused, and every token of the grant dies.
    let a = s.refresh(&client_id, &r1).await;
    assert_eq!(a.status, 400);
    assert_eq!(oauth_error(&a), "invalid_grant");
    assert_eq!(s.call_route("db", &access2).await.status, 401);
    let a = s.refresh(&client_id, &r2).await;
    assert_eq!(oauth_error(&a), "invalid_grant", "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_user_by_another_process_ends_their_tokens_on_the_next_request() {
    let s = Setup::new(true).await;
    let (_, t) = s.tokens().await;
    let access = t["access_token"].as_str().expect("access").to_owned();
    // Served, and kept in the relay's memory.
    for _ in 0..3 {
        assert_eq!(s.call_route("db", &access).await.status, 200);
    }
    let (code, _, err) = s.relay.admin(&["user", "remove", EMAIL]);
    assert_eq!(code, 0, "{err}");
    let a = s.call_route("db", &access).await;
    assert_eq!(a.status, 401, "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_stop_working() {
    let s = Setup::new(true).await;
    let (client_id, t) = s.tokens().await;
    let access = t["access_token"].as_str().expect("access").to_owned();
    let refresh = t["refresh_token"].as_str().expect("refresh").to_owned();
    assert_eq!(s.call_route("db", &access).await.status, 200);
    let a = s
        .form(
            "/oauth/revoke",
            &[("token", &access), ("client_id", &client_id)],
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let a = s.call_route("db", &access).await;
    assert_eq!(a.status, 401);
    let challenge = a.headers["www-authenticate"].to_str().expect("ascii");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("resource_metadata="), "{challenge}");
    // Revoking the refresh token ends the grant.
    let a = s
        .form(
            "/oauth/revoke",
            &[("token", &refresh), ("client_id", &client_id)],
            None,
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        oauth_error(&s.refresh(&client_id, &refresh).await),
        "invalid_grant"
    );
    // Unknown tokens get the same 200 (RFC 7009 §2.2).
    let a = s
        .form(
            "/oauth/revoke",
            &[("token", "dboa_nope"), ("client_id", &client_id)],
            None,
        )
        .await;
    assert_eq!(a.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_the_session_csrf_token_are_refused() {
    let s = Setup::new(false).await;
    // `relay user add` refuses a second account of the same email, a short
    // password and a non-address.
    let (code, err) = add_user(&s.relay, EMAIL, "another password");
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");
    let (code, err) = add_user(&s.relay, "bob@example.com", "short");
    assert_ne!(code, 0);
    assert!(err.contains("at least 8 characters"), "{err}");
    let (code, err) = add_user(&s.relay, "bob", "long enough password");
    assert_ne!(code, 0);
    assert!(err.contains("not an email address"), "{err}");
    let (code, out, _) = s.relay.admin(&["user", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains(EMAIL) && !out.contains("bob"), "{out}");

    let client_id = s.register(REDIRECT).await;
    let page = s
        .get(&s.authorize_url(&client_id, REDIRECT, "db"), None)
        .await;
    let cookie = session_cookie(&page);
    let body = page.text();
    let request = hidden(&body, "request");
    for (csrf, cookie) in [
        (None, Some(cookie.as_str())),
        (Some("0".repeat(64)), Some(cookie.as_str())),
        (Some(hidden(&body, "csrf")), None),
    ] {
        let mut pairs = vec![
            ("request", request.as_str()),
            ("email", EMAIL),
            ("password", PASSWORD),
        ];
        if let Some(c) = &csrf {
            pairs.push(("csrf", c));
        }
        let a = s.form("/oauth/login", &pairs, cookie).await;
        assert_eq!(a.status, 403, "{csrf:?} {cookie:?}: {}", a.text());
        assert!(a.text().contains("CSRF"), "{}", a.text());
        assert!(a.headers.get("set-cookie").is_none());
    }
    // A wrong password is refused on the page, not by redirect.
    let a = s
        .form(
            "/oauth/login",
            &[
                ("csrf", &hidden(&body, "csrf")),
                ("request", &request),
                ("email", EMAIL),
                ("password", "wrong password"),
            ],
            Some(&cookie),
        )
        .await;
    assert_eq!(a.status, 401);
    assert!(a.text().contains("Wrong email or password"), "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_redirects_only_to_registered_uris() {
    let s = Setup::new(false).await;
    let client_id = s.register(REDIRECT).await;
    // An unregistered redirect URI: an error page, never a redirect.
    for evil in ["https://evil.example/cb", "http://127.0.0.1:53682/other"] {
        let a = s.get(&s.authorize_url(&client_id, evil, "db"), None).await;
        assert_eq!(a.status, 400, "{evil}");
        assert!(a.headers.get("location").is_none(), "{evil}");
        assert!(
            a.text().contains("not a redirect URI registered"),
            "{}",
            a.text()
        );
    }
    let a = s
        .get(&s.authorize_url("dbc_unknown", REDIRECT, "db"), None)
        .await;
    assert_eq!(a.status, 400);
    assert!(a.headers.get("location").is_none());
    // Loopback redirect URIs match on any port.
    let a = s
        .get(
            &s.authorize_url(&client_id, "http://127.0.0.1:40001/callback", "db"),
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    // Once the redirect URI is known good, errors go back to it with iss.
    let mut bad = url::Url::parse(&s.authorize_url(&client_id, REDIRECT, "db")).expect("url");
    let pairs: Vec<(String, String)> = bad
        .query_pairs()
        .filter(|(k, _)| k != "resource")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    bad.query_pairs_mut().clear().extend_pairs(pairs);
    let a = s.get(bad.as_str(), None).await;
    assert_eq!(a.status, 303, "{}", a.text());
    let to = url::Url::parse(&location(&a)).expect("location");
    assert!(to.as_str().starts_with(REDIRECT), "{to}");
    let q = query(&to);
    assert_eq!(q("error").as_deref(), Some("invalid_target"));
    assert_eq!(q("state").as_deref(), Some("xyz"));
    assert_eq!(q("iss").as_deref(), Some(s.relay.url().as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_access_tokens_are_refused_and_refresh_renews_them() {
    let s = Setup::with_args(false, &["--access-token-ttl", "1s"]).await;
    let (client_id, t) = s.tokens().await;
    assert_eq!(t["expires_in"], 1);
    let access = t["access_token"].as_str().expect("access").to_owned();
    // Wait (generously) for the second to pass.
    let mut last = String::new();
    for _ in 0..300 {
        let a = s.call_route("db", &access).await;
        last = a.text();
        if a.status == 401 && last.contains("expired") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last.contains("the token has expired"), "{last}");
    let a = s
        .refresh(&client_id, t["refresh_token"].as_str().expect("refresh"))
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_ne!(a.json()["access_token"], t["access_token"]);
}

/// An MCP `initialize` POST to route `db` with a bearer token.
fn initialize_request(route_url: &str, token: &str) -> http::Request<e2e::client::Body> {
    http::Request::builder()
        .method("POST")
        .uri(route_url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(full_body(
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "crash-test", "version": "1"}}})
            .to_string(),
        ))
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_during_load_keeps_its_state_and_the_audit_of_every_completed_request() {
    let mut s = Setup::new(true).await;
    let (client_id, tokens) = s.tokens().await;
    let access = tokens["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    let client_token = s.relay.token(EMAIL, true);

    // Load from four callers (two credentials) until the relay dies.
    let completed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for n in 0..4 {
        let token = if n % 2 == 0 {
            access.clone()
        } else {
            client_token.clone()
        };
        let ca = s.relay.ca();
        let route = s.relay.route_url("db");
        let completed = completed.clone();
        load.push(tokio::spawn(async move {
            let http = HttpsClient::new(&ca, n % 2 == 1);
            loop {
                match http.try_fetch(initialize_request(&route, &token)).await {
                    Ok(a) if a.status == 200 => {
                        let id = a.headers["x-request-id"]
                            .to_str()
                            .expect("ascii")
                            .to_owned();
                        completed.lock().expect("lock").push(id);
                    }
                    Ok(a) => panic!("{} {}", a.status, a.text()),
                    Err(_) => return, // the relay is gone
                }
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while completed.lock().expect("lock").len() < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the load did not get going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.relay.proc.signal("KILL");
    s.relay.proc.wait_exit(Duration::from_secs(20)).await;
    for t in load {
        t.await.expect("load task");
    }

    // Every request whose client saw a complete answer is in the audit log.
    let completed = completed.lock().expect("lock").clone();
    let log = std::fs::read_to_string(s.relay.state.path().join("audit.jsonl")).expect("audit log");
    let audited: std::collections::HashSet<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["status"] == 200 && e["complete"] == true)
        .filter_map(|e| e["request_id"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = completed
        .iter()
        .filter(|id| !audited.contains(*id))
        .collect();
    println!(
        "killed during load: {} requests completed, {} audited, {} missing",
        completed.len(),
        completed.len() - missing.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "completed but not audited: {missing:?}");

    // The restarted relay has its tokens, OAuth client and grant, account.
    let state = s.relay.state.clone();
    let addr = s.relay.addr.to_string();
    s.relay = RelayProc::start_with(state, &addr, &[]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        // The agent reconnects by itself.
        let a = s
            .http
            .try_fetch(initialize_request(&s.relay.route_url("db"), &client_token))
            .await;
        let status = a.as_ref().map(|a| a.status.as_u16());
        if status == Ok(200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the route did not come back: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = s.call_route("db", &access).await;
    assert_eq!(
        a.status,
        200,
        "the OAuth access token after the crash: {}",
        a.text()
    );
    let a = s.refresh(&client_id, &refresh).await;
    assert_eq!(
        a.status,
        200,
        "the refresh token after the crash: {}",
        a.text()
    );
    let (code, out, err) = s.relay.admin(&["user", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(EMAIL), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_errors_are_not_an_open_redirect_before_sign_in() {
    let s = Setup::new(false).await;
    // Anyone may register a client whose redirect URI is any https URL.
    const EVIL: &str = "https://evil.example/landing";
    let client_id = s.register(EVIL).await;
    let without_resource = |url: &str| {
        let mut bad = url::Url::parse(url).expect("url");
        let pairs: Vec<(String, String)> = bad
            .query_pairs()
            .filter(|(k, _)| k != "resource")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        bad.query_pairs_mut().clear().extend_pairs(pairs);
        bad.to_string()
    };
    let bad = without_resource(&s.authorize_url(&client_id, EVIL, "db"));
    // A browser that has not signed in gets a page, not a redirect: the
    // error and a link back that the person may follow.
    let a = s.get(&bad, None).await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.headers.get("location").is_none(), "{:?}", a.headers);
    let page = a.text();
    assert!(page.contains("invalid_target"), "{page}");
    assert!(
        page.contains("did not send you back to evil.example"),
        "{page}"
    );
    assert!(
        page.contains("href=\"https://evil.example/landing?error=invalid_target"),
        "{page}"
    );
    // The same with a session that has not signed in yet.
    let login = s.get(&s.authorize_url(&client_id, EVIL, "db"), None).await;
    assert_eq!(login.status, 200, "{}", login.text());
    let cookie = session_cookie(&login);
    let a = s.get(&bad, Some(&cookie)).await;
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.headers.get("location").is_none(), "{:?}", a.headers);

    // Once the person has signed in, errors go back to the client's
    // registered URI as usual (RFC 6749 §4.1.2.1).
    let body = login.text();
    let signed = s
        .form(
            "/oauth/login",
            &[
                ("csrf", &hidden(&body, "csrf")),
                ("request", &hidden(&body, "request")),
                ("email", EMAIL),
                ("password", PASSWORD),
            ],
            Some(&cookie),
        )
        .await;
    assert_eq!(signed.status, 303, "{}", signed.text());
    let cookie = session_cookie(&signed);
    let a = s.get(&bad, Some(&cookie)).await;
    assert_eq!(a.status, 303, "{}", a.text());
    let to = url::Url::parse(&location(&a)).expect("location");
    assert!(to.as_str().starts_with(EVIL), "{to}");
    assert_eq!(query(&to)("error").as_deref(), Some("invalid_target"));
}

/// Every OAuth path answers a method it does not take, and the grants API
/// answers its own, with 405, the module's error and `Allow`; other paths
/// under the authorization server's prefixes are 404; a preflight is
/// answered on any of them; the grants API asks for the credential before
/// anything else. (Dispatched by axum routers; `Allow` is new.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_and_methods_of_the_oauth_server_and_the_grants_api() {
    let s = Setup::new(false).await;
    let send = |method: &'static str, path: &str, token: Option<&str>| {
        let mut b = http::Request::builder()
            .method(method)
            .uri(s.url(path))
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        s.http.fetch(b.body(full_body("")).expect("request"))
    };
    // (method, path, status, Allow, readable by browsers)
    let oauth = [
        (
            "POST",
            "/.well-known/oauth-authorization-server",
            405,
            "GET",
            true,
        ),
        (
            "HEAD",
            "/.well-known/openid-configuration",
            405,
            "GET",
            true,
        ),
        (
            "DELETE",
            "/.well-known/oauth-protected-resource",
            405,
            "GET",
            true,
        ),
        ("GET", "/oauth/register", 405, "POST", true),
        ("PUT", "/oauth/token", 405, "POST", true),
        ("GET", "/oauth/revoke", 405, "POST", true),
        ("GET", "/oauth/device_authorization", 405, "POST", true),
        ("POST", "/oauth/authorize", 405, "GET", false),
        ("GET", "/oauth/login", 405, "POST", false),
        ("GET", "/oauth/consent", 405, "POST", false),
        ("POST", "/device", 405, "GET", false),
        ("GET", "/device/login", 405, "POST", false),
        ("GET", "/device/approve", 405, "POST", false),
        ("GET", "/oauth/nothing", 404, "", false),
        ("GET", "/oauth/token/", 404, "", false),
        ("GET", "/device/nothing", 404, "", false),
        ("GET", "/.well-known/nothing", 404, "", true),
        (
            "POST",
            "/.well-known/oauth-protected-resource/mcp/db",
            404,
            "",
            true,
        ),
        (
            "GET",
            "/.well-known/oauth-protected-resource/mcp/",
            404,
            "",
            true,
        ),
        (
            "GET",
            "/.well-known/oauth-protected-resource/mcp/db/",
            200,
            "",
            true,
        ),
        ("POST", "/oauth/upstream/github", 404, "", false),
        ("PUT", "/oauth/callback/github", 404, "", false),
    ];
    for (method, path, status, allow, cors) in oauth {
        let a = send(method, path, None).await;
        assert_eq!(a.status.as_u16(), status, "{method} {path}: {}", a.text());
        if method != "HEAD" && status != 200 {
            let v = a.json();
            let description = v["error_description"].as_str().expect("description");
            if status == 405 {
                assert_eq!(v["error"], "invalid_request", "{method} {path}: {v}");
                assert_eq!(description, format!("{method} is not allowed on {path}"));
            } else if path.ends_with("/mcp/") {
                assert_eq!(v["error"], "not_found", "{method} {path}: {v}");
                assert_eq!(description, r#""" is not a route name"#);
            } else {
                assert_eq!(v["error"], "not_found", "{method} {path}: {v}");
                assert_eq!(description, format!("no such path on this relay: {path}"));
            }
            assert_eq!(a.headers["cache-control"], "no-store", "{method} {path}");
        }
        let got = a.headers.get("allow").map(|v| v.to_str().expect("ascii"));
        assert_eq!(got.unwrap_or_default(), allow, "{method} {path}");
        assert_eq!(
            a.headers.get("access-control-allow-origin").is_some(),
            cors,
            "{method} {path}"
        );
    }
    for path in ["/oauth/token", "/oauth/nothing", "/device"] {
        let a = send("OPTIONS", path, None).await;
        assert_eq!(a.status, 204, "{path}");
        assert_eq!(a.headers["access-control-allow-origin"], "*");
        assert_eq!(
            a.headers["access-control-allow-methods"],
            "GET, POST, OPTIONS"
        );
    }

    // A form endpoint refuses another body type, and a body over its cap,
    // with the OAuth error the client reads (and no cache keeps).
    for (path, content_type, body) in [
        ("/oauth/token", "application/json", "{}".to_owned()),
        ("/oauth/revoke", "text/plain", "token=x".to_owned()),
        (
            "/oauth/token",
            "application/x-www-form-urlencoded",
            "a=".to_owned() + &"x".repeat(70 * 1024),
        ),
        ("/oauth/register", "application/json", "x".repeat(70 * 1024)),
    ] {
        let req = http::Request::builder()
            .method("POST")
            .uri(s.url(path))
            .header("content-type", content_type)
            .body(full_body(body))
            .expect("request");
        let a = s.http.fetch(req).await;
        assert_eq!(a.status, 400, "{path} {content_type}: {}", a.text());
        let v = a.json();
        assert_eq!(v["error"], "invalid_request", "{path}: {v}");
        let description = v["error_description"].as_str().expect("description");
        let expected = if content_type.ends_with("urlencoded") || path == "/oauth/register" {
            "could not read the request body (at most 65536 bytes)"
        } else {
            "the body must be application/x-www-form-urlencoded"
        };
        assert!(description.starts_with(expected), "{path}: {description}");
        assert_eq!(a.headers["cache-control"], "no-store", "{path}");
    }

    // The grants API: the credential first, whatever the path.
    let a = send("GET", "/api/nothing", None).await;
    assert_eq!(a.status, 401, "{}", a.text());
    assert_eq!(a.json()["error"], "invalid_token");
    let agent = s.relay.token(EMAIL, false);
    let grants = [
        ("GET", "/api/grants", 200, "", ""),
        ("GET", "/api/grants/", 200, "", ""),
        ("DELETE", "/api/grants", 405, "method_not_allowed", "GET"),
        ("HEAD", "/api/grants", 405, "", "GET"),
        (
            "GET",
            "/api/routes/db/grants",
            405,
            "method_not_allowed",
            "POST",
        ),
        (
            "POST",
            "/api/grants/g1",
            405,
            "method_not_allowed",
            "DELETE",
        ),
        ("DELETE", "/api/grants/nothing/", 404, "not_found", ""),
        ("GET", "/api/nothing", 404, "not_found", ""),
        ("GET", "/api/grants/a/b", 404, "not_found", ""),
    ];
    for (method, path, status, error, allow) in grants {
        let a = send(method, path, Some(&agent)).await;
        assert_eq!(a.status.as_u16(), status, "{method} {path}: {}", a.text());
        if !error.is_empty() {
            let v = a.json();
            assert_eq!(v["error"], error, "{method} {path}: {v}");
            let message = v["message"].as_str().expect("message");
            match status {
                405 => assert_eq!(message, format!("{method} is not allowed on {path}")),
                _ if path.starts_with("/api/grants/nothing") => {
                    assert!(message.starts_with("no grant \"nothing\""), "{message}")
                }
                _ => assert_eq!(message, format!("no such path on this relay: {path}")),
            }
        }
        let got = a.headers.get("allow").map(|v| v.to_str().expect("ascii"));
        assert_eq!(got.unwrap_or_default(), allow, "{method} {path}");
    }
}
