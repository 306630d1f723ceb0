//! Sign-in through an upstream OpenID Connect provider: a real one,
//! `oidc-provider-mock` from PyPI, on loopback. The relay discovers it at
//! startup; a person signs in there (code flow with state, nonce and PKCE),
//! the relay takes the verified email and the groups from the ID token, and
//! the groups reach the policy (`principal in Group::"data"`) and the audit.
//! Refused: an unverified email; a relay whose issuer cannot be discovered
//! does not start.

use std::time::Duration;

use e2e::browser::{encode, hidden, location, Browser};
use e2e::oidc_provider::OidcProvider;
use e2e::procs::{bin, Proc};
use e2e::{AgentProc, HttpsClient, RelayProc, TempDir};
use serde_json::{json, Value};

const OWNER: &str = "owner@example.com";
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const SECRET: &str = "e2e-client-secret-0123";
const REDIRECT: &str = "http://127.0.0.1:53682/callback";
/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn oidc_flags(issuer: &str) -> Vec<String> {
    [
        "--oidc-issuer",
        issuer,
        "--oidc-client-id",
        "drawbridge-e2e",
        "--oidc-client-secret",
        SECRET,
        "--oidc-name",
        "Mock IdP",
        "--upstream-dev-allow-http-loopback",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// How far a sign-in through the provider went.
enum SignIn {
    /// The MCP client got its access token.
    Token(String),
    /// The relay refused at its callback: the page's status and text.
    Refused(u16, String),
}

/// An MCP client's OAuth sign-in for `route`, the person signing in at the
/// provider as `sub`.
async fn sign_in(relay: &RelayProc, idp: &OidcProvider, sub: &str, route: &str) -> SignIn {
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
    assert!(body.contains("Sign in with Mock IdP"), "{body}");
    // No local accounts: the provider is the only way in.
    assert!(!body.contains("type=\"password\""), "{body}");
    let marker = "class=\"provider\" href=\"";
    let start = body.find(marker).expect("the provider's link") + marker.len();
    let href = body[start..][..body[start..].find('"').expect("quote")].replace("&amp;", "&");
    let to_idp = b.get(&href).await;
    assert_eq!(to_idp.status, 303, "{}", to_idp.text());
    let authorize = location(&to_idp);
    let at_idp = url::Url::parse(&authorize).expect("provider URL");
    let param = |name: &str| {
        at_idp
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    assert!(param("nonce").is_some_and(|n| n.len() >= 32), "{authorize}");
    assert!(param("state").is_some_and(|s| s.len() >= 32), "{authorize}");
    assert_eq!(
        param("redirect_uri"),
        Some(format!("{}/oauth/callback/oidc", relay.url()))
    );
    let back = idp.sign_in(&authorize, sub).await;
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
    assert!(body.contains(sub), "signed in as {sub}: {body}");
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

fn token(s: SignIn) -> String {
    match s {
        SignIn::Token(t) => t,
        SignIn::Refused(status, page) => panic!("sign-in refused ({status}): {page}"),
    }
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "oidc-test", "version": "1"}}})
}

async fn post(relay: &RelayProc, token: &str, body: Value) -> e2e::client::Answer {
    let req = http::Request::builder()
        .method("POST")
        .uri(relay.route_url("db"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(e2e::client::full_body(body.to_string()))
        .expect("request");
    HttpsClient::new(&relay.ca(), false).fetch(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_from_the_provider_reach_policy_and_audit() {
    let idp = OidcProvider::start().await;
    idp.set_user(
        "alice",
        json!({"email": ALICE, "email_verified": true, "groups": ["data", "eng"]}),
    )
    .await;
    idp.set_user(
        "bob",
        json!({"email": BOB, "email_verified": true, "groups": ["sales"]}),
    )
    .await;
    let dir = TempDir::new("oidc");
    // The organisation lets only the group "data" in; the owner lets in
    // everybody at example.com (the agent decides again, on the owner's
    // policy alone).
    let org = dir.path().join("org.cedar");
    std::fs::write(
        &org,
        "@id(\"data-group\")\npermit (principal in Group::\"data\", action, resource);\n",
    )
    .expect("write policy");
    let mut flags = oidc_flags(&idp.issuer);
    flags.extend(["--policy".into(), org.display().to_string()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let relay = RelayProc::start(&flags).await;
    let db = dir.path().join("demo.db").display().to_string();
    let _agent = AgentProc::start_upstream(
        &relay,
        &relay.token(OWNER, false),
        "db",
        &["--sqlite", &db, "--allow", "@example.com"],
        "auto",
    )
    .await;

    let alice = token(sign_in(&relay, &idp, "alice", "db").await);
    let a = post(&relay, &alice, initialize()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.text().contains("\"result\""), "{}", a.text());

    let bob = token(sign_in(&relay, &idp, "bob", "db").await);
    let a = post(&relay, &bob, initialize()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.text().contains("-32001"), "{}", a.text());
    let a = HttpsClient::new(&relay.ca(), false)
        .get(&relay.route_url("db"), Some(&bob))
        .await;
    assert_eq!(a.status, 403, "{}", a.text());

    // The audit names each person with the provider's groups.
    let (code, out, err) = relay.admin(&["audit", "--json"]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let alice_allowed = events.iter().find(|e| {
        e["identity"] == ALICE && e["decision"] == "allow" && e["method"] == "initialize"
    });
    let alice_allowed = alice_allowed.unwrap_or_else(|| panic!("no allowed event of Alice: {out}"));
    assert_eq!(alice_allowed["groups"], json!(["data", "eng"]), "{out}");
    let bob_denied = events
        .iter()
        .find(|e| e["identity"] == BOB && e["decision"] == "deny")
        .unwrap_or_else(|| panic!("no denied event of Bob: {out}"));
    assert_eq!(bob_denied["groups"], json!(["sales"]), "{out}");
    // The client secret is never logged.
    let logs = format!(
        "{}\n{}",
        relay.proc.stderr_text(),
        relay.proc.stdout.lock().expect("lock").join("\n")
    );
    assert!(!logs.contains(SECRET), "the secret was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_email_does_not_sign_in() {
    let idp = OidcProvider::start().await;
    idp.set_user(
        "mallory",
        json!({"email": "mallory@example.com", "email_verified": false, "groups": ["data"]}),
    )
    .await;
    let flags = oidc_flags(&idp.issuer);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let relay = RelayProc::start(&flags).await;
    match sign_in(&relay, &idp, "mallory", "db").await {
        SignIn::Token(_) => panic!("an unverified email signed in"),
        SignIn::Refused(status, page) => {
            assert_eq!(status, 401, "{page}");
            assert!(
                page.contains("has not verified the email address mallory@example.com"),
                "{page}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_cannot_be_discovered_stops_the_relay() {
    let idp = OidcProvider::start().await;
    let state = TempDir::new("oidc-bad");
    let bad_issuer = format!("{}/no-such-issuer", idp.issuer);
    let mut args: Vec<String> = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--self-signed",
        "--admin-listen",
        "off",
        "--state-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(state.path().display().to_string());
    args.extend(oidc_flags(&bad_issuer));
    let mut relay = Proc::spawn("relay", &bin("relay"), &args, &[]);
    let code = relay.wait_exit(Duration::from_secs(30)).await;
    assert_ne!(code, Some(0));
    let err = relay.stderr_text();
    assert!(
        err.contains(&format!("OpenID Connect discovery of {bad_issuer} failed"))
            && err.contains("404"),
        "{err}"
    );
}
