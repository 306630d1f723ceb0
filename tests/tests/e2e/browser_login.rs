//! The relay's sign-in and consent pages in a real browser: headless
//! Chromium over WebDriver, with JavaScript switched off. The test is the
//! OAuth client (dynamic registration, PKCE, a loopback redirect URI it
//! serves itself); the browser signs in with a local account, reads the
//! consent page, approves or denies, and lands on the redirect URI. Also:
//! consent asked once per client, a wrong password, forged forms (without
//! or with a wrong CSRF token, and from another site), and the session
//! cookie's attributes as the browser stores them.

use e2e::browser::Browser;
use e2e::chromium::Chromium;
use e2e::loopback_site::LoopbackSite;
use e2e::oauth_app::{Authorization, OAuthApp};
use e2e::{AgentProc, RelayProc, TempDir};
use rmcp::model::CallToolRequestParams;

const EMAIL: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery";
/// The relay's session cookie (`__Host-`: Secure, host-only, Path=/).
const COOKIE: &str = "__Host-drawbridge_session";
/// A client name with markup in it: the pages must show it as text.
const APP_NAME: &str = "Notes <b>app</b> & co";

/// A relay with Alice's local account, Chromium, and the client
/// application's loopback site; with `agent`, the built-in SQLite server
/// serves route `db`, owned by Alice.
struct Setup {
    relay: RelayProc,
    chromium: Chromium,
    site: LoopbackSite,
    _agent: Option<AgentProc>,
    _dir: TempDir,
}

impl Setup {
    async fn new(agent: bool) -> Setup {
        let (relay, chromium, site) = tokio::join!(
            RelayProc::start(&[]),
            Chromium::start(),
            LoopbackSite::start()
        );
        e2e::browser::add_user(&relay, EMAIL, PASSWORD);
        let dir = TempDir::new("browser-login");
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
        Setup {
            relay,
            chromium,
            site,
            _agent: agent,
            _dir: dir,
        }
    }

    async fn app(&self) -> OAuthApp {
        OAuthApp::register(&self.relay, APP_NAME, &self.site.url("/callback")).await
    }

    /// Opens the authorization in Chromium.
    async fn open(&self, app: &OAuthApp) -> Authorization {
        let auth = app.authorize(&self.relay, &self.relay.route_url("db"), "mcp");
        self.chromium.goto(&auth.url).await;
        auth
    }

    /// On the sign-in page: types the email and `password`, clicks Sign in.
    async fn sign_in(&self, password: &str) {
        let b = &self.chromium;
        assert_eq!(
            b.title().await,
            "Sign in · Drawbridge",
            "{}",
            b.text().await
        );
        b.type_into("email", EMAIL).await;
        b.type_into("password", password).await;
        b.click_button("Sign in").await;
    }

    /// Waits until the browser has left the relay; the answer the client
    /// application got on its redirect URI.
    async fn answer(&self) -> url::Url {
        let callback = self.site.url("/callback");
        self.chromium
            .wait_for_url("the redirect URI", |u| u.as_str().starts_with(&callback))
            .await
    }

    /// Waits for the consent page.
    async fn consent_page(&self) -> String {
        self.chromium
            .wait_for_title("Allow access? · Drawbridge")
            .await;
        self.chromium.text().await
    }

    /// The session cookie as Chromium keeps it (read on a relay page).
    async fn session_cookie(&self) -> fantoccini::cookies::Cookie<'static> {
        let here = self.chromium.url().await;
        assert_eq!(
            here.port_or_known_default(),
            Some(self.relay.addr.port()),
            "cookies are read on a relay page, not at {here}"
        );
        self.chromium
            .client
            .get_named_cookie(COOKIE)
            .await
            .unwrap_or_else(|e| panic!("no {COOKIE} cookie in Chromium: {e}"))
    }

    /// How many times the relay counted `kind` (an OAuth event).
    async fn events(&self, kind: &str) -> f64 {
        self.relay
            .metric(&format!(
                r#"drawbridge_oauth_events_total{{kind="{kind}"}}"#
            ))
            .await
            .unwrap_or_else(|| panic!("no drawbridge_oauth_events_total for {kind}"))
    }

    /// The requests that reached the redirect URI.
    fn callbacks(&self) -> Vec<String> {
        self.site
            .requests()
            .into_iter()
            .filter(|r| r.starts_with("/callback"))
            .collect()
    }
}

fn param(u: &url::Url, name: &str) -> Option<String> {
    u.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Checks a successful answer on the redirect URI; its code.
#[track_caller]
fn code_of(s: &Setup, auth: &Authorization, answer: &url::Url) -> String {
    assert_eq!(param(answer, "error"), None, "{answer}");
    assert_eq!(param(answer, "state").as_deref(), Some(auth.state.as_str()));
    // RFC 9207: the issuer comes with the answer.
    assert_eq!(param(answer, "iss"), Some(s.relay.url()), "{answer}");
    param(answer, "code").unwrap_or_else(|| panic!("no code in {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_without_javascript_signs_in_consents_and_the_code_calls_a_tool() {
    let s = Setup::new(true).await;
    // JavaScript is really off: a page's script does not run.
    s.site.serve(
        "/script",
        "<!doctype html><title>no script</title><script>document.title='script ran'</script>",
    );
    s.chromium.goto(&s.site.url("/script")).await;
    assert_eq!(s.chromium.title().await, "no script");

    let mut app = s.app().await;
    let auth = s.open(&app).await;
    let page = s.chromium.text().await;
    assert!(page.contains(APP_NAME), "{page}");
    assert!(page.contains("db"), "{page}");
    s.sign_in(PASSWORD).await;

    // The consent page names the client, where it sends the browser back,
    // the route and the scopes.
    let consent = s.consent_page().await;
    for shown in [
        EMAIL,
        APP_NAME,
        &app.client_id,
        "http://127.0.0.1",
        "Route\ndb",
        &s.relay.route_url("db"),
        "Scopes\nmcp",
    ] {
        assert!(consent.contains(shown), "{shown:?} is not on\n{consent}");
    }
    assert!(s.callbacks().is_empty());
    s.chromium.click_button("Allow").await;

    let answer = s.answer().await;
    let code = code_of(&s, &auth, &answer);
    // The page the browser shows is the application's own.
    assert_eq!(s.chromium.title().await, "Received");
    assert_eq!(s.callbacks().len(), 1, "{:?}", s.callbacks());

    let t = app.exchange(&auth, &code).await;
    assert_eq!(t.status, 200, "{}", t.text());
    let tokens = t.json();
    assert_eq!(tokens["token_type"], "Bearer", "{tokens}");
    assert_eq!(tokens["scope"], "mcp", "{tokens}");
    let token = tokens["access_token"].as_str().expect("access_token");

    // The token calls a tool on Alice's laptop, through the agent.
    let client = e2e::mcp::connect(&s.relay.route_url("db"), &s.relay.ca(), token).await;
    let mut args = serde_json::Map::new();
    args.insert(
        "query".into(),
        serde_json::json!("SELECT count(*) AS n FROM orders"),
    );
    let r = client
        .call_tool(CallToolRequestParams::new("read_query").with_arguments(args))
        .await
        .expect("tools/call read_query");
    assert_eq!(r.is_error, Some(false), "{r:?}");
    let rows = r.structured_content.clone().expect("structured result");
    // The demo database has 25 orders.
    assert_eq!(rows["rows"][0]["n"], 25, "{rows}");
    client.cancel().await.expect("close the MCP session");

    // The code was for one exchange only.
    let again = app.exchange(&auth, &code).await;
    assert_eq!(again.status, 400, "{}", again.text());
    assert_eq!(again.json()["error"], "invalid_grant");
    s.chromium.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_is_asked_once_per_client() {
    let s = Setup::new(false).await;
    let mut app = s.app().await;
    let first = s.open(&app).await;
    s.sign_in(PASSWORD).await;
    s.consent_page().await;
    s.chromium.click_button("Allow").await;
    let answer = s.answer().await;
    code_of(&s, &first, &answer);

    // Same client, route and scope, same browser: straight back with a code.
    let second = s.open(&app).await;
    let answer = s.answer().await;
    let code = code_of(&s, &second, &answer);
    let t = app.exchange(&second, &code).await;
    assert_eq!(t.status, 200, "{}", t.text());

    // Signed out (a new browser session): sign in again, but no consent.
    s.chromium
        .goto(&format!(
            "{}/.well-known/oauth-authorization-server",
            s.relay.url()
        ))
        .await;
    s.chromium
        .client
        .delete_all_cookies()
        .await
        .expect("delete cookies");
    let third = s.open(&app).await;
    s.sign_in(PASSWORD).await;
    let answer = s.answer().await;
    code_of(&s, &third, &answer);

    // Another client of the same person is asked for.
    let other = OAuthApp::register(&s.relay, "Other app", &s.site.url("/callback")).await;
    s.open(&other).await;
    let consent = s.consent_page().await;
    assert!(consent.contains("Other app"), "{consent}");
    assert_eq!(s.callbacks().len(), 3, "{:?}", s.callbacks());
    s.chromium.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_shows_an_error_and_issues_nothing() {
    let s = Setup::new(false).await;
    let app = s.app().await;
    s.open(&app).await;
    let before = s.session_cookie().await;
    s.sign_in("not the password").await;

    // The sign-in page again, with the error, the email kept and the
    // password not.
    let b = &s.chromium;
    b.wait_for_url("the sign-in page", |u| u.path() == "/oauth/login")
        .await;
    assert_eq!(b.title().await, "Sign in · Drawbridge");
    let page = b.text().await;
    assert!(page.contains("Wrong email or password."), "{page}");
    let field = |name: &'static str| async move {
        b.client
            .find(fantoccini::Locator::Css(&format!("input[name=\"{name}\"]")))
            .await
            .expect("field")
            .prop("value")
            .await
            .expect("value")
    };
    assert_eq!(field("email").await.as_deref(), Some(EMAIL));
    assert_eq!(field("password").await.as_deref(), Some(""));
    // Nothing issued: no code, no signed-in session.
    assert!(s.callbacks().is_empty(), "{:?}", s.callbacks());
    assert_eq!(s.events("code_issued").await, 0.0);
    assert_eq!(s.events("login_failed").await, 1.0);
    assert_eq!(s.session_cookie().await.value(), before.value());

    // The form of the error page works: the right password goes on.
    s.sign_in(PASSWORD).await;
    s.consent_page().await;
    assert_ne!(s.session_cookie().await.value(), before.value());
    s.chromium.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forms_are_refused_and_the_session_cookie_is_secure() {
    let s = Setup::new(false).await;
    let app = s.app().await;
    let auth = s.open(&app).await;
    s.sign_in(PASSWORD).await;
    s.consent_page().await;

    // The session cookie as the browser keeps it.
    let cookie = s.session_cookie().await;
    assert_eq!(cookie.secure(), Some(true), "{cookie}");
    assert_eq!(cookie.http_only(), Some(true), "{cookie}");
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Lax"),
        "{cookie}"
    );
    assert_eq!(cookie.path(), Some("/"), "{cookie}");
    // And as the relay sets it.
    let mut raw = Browser::new(&s.relay);
    let page = raw.get(&auth.url).await;
    let set = page.headers["set-cookie"].to_str().expect("ascii");
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(set.starts_with(&format!("{COOKIE}=")), "{set}");
    let other_csrf = e2e::browser::hidden(&page.text(), "csrf");

    // With the browser's own session cookie, a consent form without the
    // session's CSRF token is refused: none, a made-up one, and the token
    // of another session.
    let request = auth.url.split_once('?').expect("a query").1;
    let session = format!("{COOKIE}={}", cookie.value());
    let http = e2e::HttpsClient::new(&s.relay.ca(), false);
    for csrf in [None, Some("0".repeat(64)), Some(other_csrf)] {
        let mut pairs = vec![("request", request), ("decision", "approve")];
        if let Some(c) = &csrf {
            pairs.push(("csrf", c));
        }
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("{}/oauth/consent", s.relay.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", &session)
            .body(e2e::client::full_body(e2e::browser::encode(&pairs)))
            .expect("request");
        let a = http.fetch(req).await;
        assert_eq!(a.status, 403, "{csrf:?}: {}", a.text());
        assert!(a.text().contains("CSRF"), "{}", a.text());
    }

    // Another site's form, submitted in the same browser: refused too.
    let forged = format!(
        "<!doctype html><title>Win a prize</title>\
         <form method=\"post\" action=\"{relay}/oauth/consent\">\
         <input type=\"hidden\" name=\"request\" value=\"{request}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" name=\"decision\" value=\"approve\">Claim</button></form>",
        relay = s.relay.url(),
        request = request.replace('&', "&amp;"),
        csrf = "0".repeat(64),
    );
    s.site.serve("/prize", &forged);
    s.chromium.goto(&s.site.url("/prize")).await;
    s.chromium.click_button("Claim").await;
    s.chromium.wait_for_title("Form expired · Drawbridge").await;
    assert_eq!(s.chromium.url().await.path(), "/oauth/consent");
    assert!(s.callbacks().is_empty(), "{:?}", s.callbacks());
    assert_eq!(s.events("code_issued").await, 0.0);

    // The person's own consent page still works.
    s.chromium.goto(&auth.url).await;
    s.consent_page().await;
    s.chromium.click_button("Allow").await;
    let answer = s.answer().await;
    code_of(&s, &auth, &answer);
    s.chromium.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denying_consent_sends_access_denied_to_the_client() {
    let s = Setup::new(false).await;
    let app = s.app().await;
    let auth = s.open(&app).await;
    s.sign_in(PASSWORD).await;
    s.consent_page().await;
    s.chromium.click_button("Deny").await;
    let answer = s.answer().await;
    assert_eq!(
        param(&answer, "error").as_deref(),
        Some("access_denied"),
        "{answer}"
    );
    assert_eq!(
        param(&answer, "state").as_deref(),
        Some(auth.state.as_str())
    );
    assert_eq!(param(&answer, "iss"), Some(s.relay.url()));
    assert_eq!(param(&answer, "code"), None, "{answer}");
    assert_eq!(s.events("code_issued").await, 0.0);

    // A denial is not remembered as consent: the next time asks again.
    s.open(&app).await;
    s.consent_page().await;
    s.chromium.quit().await;
}
