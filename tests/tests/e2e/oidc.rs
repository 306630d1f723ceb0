//! Sign-in through an upstream OpenID Connect provider: a real one,
//! `oidc-provider-mock` from PyPI, on loopback. The relay discovers it at
//! startup; a person signs in there (code flow with state, nonce and PKCE),
//! the relay takes the verified email and the groups from the ID token, and
//! the groups reach the policy (`principal in Group::"data"`) and the audit.
//! Refused: an unverified email; a relay whose issuer cannot be discovered
//! does not start.

use std::time::Duration;

use e2e::browser::{hidden, location, Browser};
use e2e::mcp;
use e2e::oidc_provider::OidcProvider;
use e2e::procs::{bin, Proc};
use e2e::upstream_sign_in::{self, param, SignIn};
use e2e::{AgentProc, HttpsClient, RelayProc, TempDir};
use rmcp::model::CallToolRequestParams;
use serde_json::{json, Value};

const OWNER: &str = "owner@example.com";
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const SECRET: &str = "e2e-client-secret-0123";

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

/// Signs in at the relay as `sub` of the provider, checking what the relay
/// asks of the provider.
async fn sign_in(relay: &RelayProc, idp: &OidcProvider, sub: &str, route: &str) -> SignIn {
    let callback = format!("{}/oauth/callback/oidc", relay.url());
    upstream_sign_in::sign_in(relay, "Sign in with Mock IdP", route, async |authorize| {
        assert_eq!(
            param(&authorize, "code_challenge_method").as_deref(),
            Some("S256")
        );
        assert!(
            param(&authorize, "nonce").is_some_and(|n| n.len() >= 32),
            "{authorize}"
        );
        assert!(
            param(&authorize, "state").is_some_and(|s| s.len() >= 32),
            "{authorize}"
        );
        assert_eq!(param(&authorize, "redirect_uri"), Some(callback));
        idp.sign_in(&authorize, sub).await
    })
    .await
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

    let alice = sign_in(&relay, &idp, "alice", "db").await.token();
    let a = post(&relay, &alice, initialize()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.text().contains("\"result\""), "{}", a.text());

    let bob = sign_in(&relay, &idp, "bob", "db").await.token();
    let a = post(&relay, &bob, initialize()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.text().contains("-32001"), "{}", a.text());
    let a = HttpsClient::new(&relay.ca(), false)
        .get(&relay.route_url("db"), Some(&bob))
        .await;
    assert_eq!(a.status, 403, "{}", a.text());

    // Removed from "data" at the provider: at her next sign-in the relay
    // records it, and her earlier token (whose groups the relay kept in
    // memory) is refused on its next request.
    for _ in 0..2 {
        assert!(post(&relay, &alice, initialize())
            .await
            .text()
            .contains("\"result\""));
    }
    idp.set_user(
        "alice",
        json!({"email": ALICE, "email_verified": true, "groups": ["eng"]}),
    )
    .await;
    let _again = sign_in(&relay, &idp, "alice", "db").await.token();
    let a = post(&relay, &alice, initialize()).await;
    assert!(a.text().contains("-32001"), "{}", a.text());

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

/// The owner's `agent connect --policy` permits the group "data": the relay
/// sends the provider's groups with each request (tunnel protocol version 4),
/// so the laptop's own decision lets a member in, and a non-member is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_policy_by_group_is_decided_on_the_laptop_too() {
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
    let dir = TempDir::new("oidc-owner-groups");
    let owner_policy = dir.path().join("owner.cedar");
    std::fs::write(
        &owner_policy,
        "@id(\"data-group\")\npermit (principal in Group::\"data\", action, resource);\n",
    )
    .expect("write policy");
    let flags = oidc_flags(&idp.issuer);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let relay = RelayProc::start(&flags).await;
    let db = dir.path().join("demo.db").display().to_string();
    let policy = owner_policy.display().to_string();
    let agent = AgentProc::start_upstream(
        &relay,
        &relay.token(OWNER, false),
        "db",
        &["--sqlite", &db, "--policy", &policy],
        "auto",
    )
    .await;

    // Alice is in "data": her tool call passes the relay and the laptop.
    let alice = sign_in(&relay, &idp, "alice", "db").await.token();
    let client = mcp::connect(&relay.route_url("db"), &relay.ca(), &alice).await;
    let r = client
        .call_tool(
            CallToolRequestParams::new("read_query").with_arguments(
                json!({"query": "SELECT count(*) AS n FROM orders"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ),
        )
        .await
        .expect("read_query as a member of data");
    assert_eq!(r.is_error, Some(false), "{r:?}");
    assert_eq!(
        r.structured_content.expect("structured")["rows"][0]["n"],
        25
    );

    // Bob is not: refused (at the relay, which evaluates the owner's policy
    // with the same groups).
    let bob = sign_in(&relay, &idp, "bob", "db").await.token();
    let a = post(&relay, &bob, initialize()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["error"]["code"], -32001, "{}", a.text());

    // The laptop decided Alice's call on her groups: its live line says
    // allow (without the groups its owner's policy would deny her).
    let stdout = agent.proc.stdout.lock().expect("lock").join("\n");
    assert!(
        stdout.contains(&format!("{ALICE} tools/call read_query → allow")),
        "{stdout}"
    );
    assert!(!stdout.contains(BOB), "{stdout}");
    // And the relay's audit shows the owner's rule permitting her.
    let (code, out, err) = relay.admin(&["audit", "--json"]);
    assert_eq!(code, 0, "{err}");
    let allowed = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .find(|e| e["identity"] == ALICE && e["target"] == "read_query")
        .unwrap_or_else(|| panic!("no event of Alice's call: {out}"));
    assert_eq!(allowed["decision"], "allow", "{allowed}");
    assert_eq!(allowed["groups"], json!(["data", "eng"]), "{allowed}");
    assert!(
        allowed["policy"].to_string().contains("data-group"),
        "{allowed}"
    );
}

/// `agent login` approved by a person who signs in at `/device` through the
/// provider (the relay has no local accounts): the link comes back to the
/// approval of the same code, and the agent gets a credential of that email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_login_is_approved_after_signing_in_at_the_provider() {
    let idp = OidcProvider::start().await;
    idp.set_user(
        "alice",
        json!({"email": ALICE, "email_verified": true, "groups": ["data"]}),
    )
    .await;
    let mut flags = oidc_flags(&idp.issuer);
    flags.extend(["--device-poll-interval".into(), "1s".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let relay = RelayProc::start(&flags).await;
    let home = TempDir::new("oidc-login-home");
    let config = home.path().join("config");
    let config_s = config.display().to_string();
    let mut login = Proc::spawn(
        "agent-login",
        &bin("agent"),
        &[
            "login".into(),
            "--relay".into(),
            relay.url(),
            "--ca".into(),
            relay.ca().display().to_string(),
        ],
        &[("XDG_CONFIG_HOME", config_s.as_str())],
    );
    let line = login
        .wait_stdout("enter the code:", Duration::from_secs(20))
        .await;
    let code = line.rsplit(' ').next().expect("code").to_owned();

    // The person opens the agent's link: the provider is the way in.
    let mut b = Browser::new(&relay);
    let page = b.get(&format!("/device?user_code={code}")).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let body = page.text();
    assert!(!body.contains("type=\"password\""), "{body}");
    let marker = ">Sign in with Mock IdP</a>";
    let end = body
        .find(marker)
        .unwrap_or_else(|| panic!("no provider link on {body}"));
    let start = body[..end].rfind("href=\"").expect("the link's href") + "href=\"".len();
    let href = body[start..end].trim_end_matches('"').replace("&amp;", "&");
    let to_provider = b.get(&href).await;
    assert_eq!(to_provider.status, 303, "{}", to_provider.text());
    let back = idp.sign_in(&location(&to_provider), "alice").await;
    let signed_in = b.get(&back).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.text());
    assert_eq!(location(&signed_in), format!("/device?user_code={code}"));

    // Back at the approval of the same code, signed in as Alice.
    let page = b.get(&location(&signed_in)).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let body = page.text();
    assert!(
        body.contains("Approve this agent?") && body.contains(ALICE),
        "{body}"
    );
    let done = b
        .form(
            "/device/approve",
            &[
                ("csrf", &hidden(&body, "csrf")),
                ("user_code", &hidden(&body, "user_code")),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert!(done.text().contains("Agent approved"), "{}", done.text());

    assert_eq!(login.wait_exit(Duration::from_secs(30)).await, Some(0));
    let out = login.stdout.lock().expect("lock").join("\n");
    assert!(
        out.contains(&format!("signed in to {} as {ALICE}", relay.url())),
        "{out}"
    );
    let (_, tokens, _) = relay.admin(&["token", "list", "--json"]);
    assert!(
        tokens.contains(&format!("\"owner\":\"{ALICE}\"")) && tokens.contains("agent login"),
        "{tokens}"
    );
}
