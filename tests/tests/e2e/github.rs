//! Sign-in with GitHub, against a STAND-IN GitHub (tests/src/github_standin.rs:
//! github.com cannot be reached from the tests) that implements exactly the
//! endpoints the relay uses and checks what it receives (client id and
//! secret, code, redirect URI, PKCE verifier). The email is the primary
//! verified address; organisations and `org/team` become groups, which
//! reach the policy and the audit.

use e2e::github_standin::{GitHubStandIn, GitHubUser};
use e2e::upstream_sign_in::{self, param, SignIn};
use e2e::{AgentProc, HttpsClient, RelayProc, TempDir};
use serde_json::{json, Value};

const OWNER: &str = "owner@example.com";
const CLIENT_ID: &str = "Iv1.e2e";
const SECRET: &str = "github-e2e-secret-4567";

fn flags(gh: &GitHubStandIn, secret: &str) -> Vec<String> {
    [
        "--github-client-id",
        CLIENT_ID,
        "--github-client-secret",
        secret,
        "--github-base-url",
        &gh.url(),
        "--github-api-url",
        &gh.url(),
        "--upstream-dev-allow-http-loopback",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn user(email: &str, verified: bool, org: &str, team: &str) -> GitHubUser {
    GitHubUser {
        emails: json!([
            {"email": "old@example.org", "primary": false, "verified": true, "visibility": null},
            {"email": email, "primary": true, "verified": verified, "visibility": "private"}
        ]),
        orgs: json!([{"login": org, "id": 1}]),
        teams: json!([{"slug": team, "name": team, "organization": {"login": org}}]),
    }
}

async fn sign_in(relay: &RelayProc, gh: &GitHubStandIn) -> SignIn {
    let callback = format!("{}/oauth/callback/github", relay.url());
    upstream_sign_in::sign_in(relay, "Sign in with GitHub", "db", async |authorize| {
        assert!(authorize.starts_with(&gh.url()), "{authorize}");
        assert_eq!(param(&authorize, "client_id").as_deref(), Some(CLIENT_ID));
        assert_eq!(param(&authorize, "redirect_uri"), Some(callback));
        let a = e2e::oidc_provider::plain("GET", &authorize, "text/plain", String::new()).await;
        assert_eq!(a.status, 302, "{}", a.body);
        a.location.expect("the stand-in's redirect")
    })
    .await
}

async fn initialize(relay: &RelayProc, token: &str) -> String {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "github-test", "version": "1"}}});
    let req = http::Request::builder()
        .method("POST")
        .uri(relay.route_url("db"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(e2e::client::full_body(body.to_string()))
        .expect("request");
    let a = HttpsClient::new(&relay.ca(), false).fetch(req).await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_teams_reach_policy_and_audit() {
    let gh = GitHubStandIn::start(CLIENT_ID, SECRET).await;
    let dir = TempDir::new("github");
    let org = dir.path().join("org.cedar");
    std::fs::write(
        &org,
        "@id(\"acme-data\")\npermit (principal in Group::\"acme/data\", action, resource);\n",
    )
    .expect("write policy");
    let mut f = flags(&gh, SECRET);
    f.extend(["--policy".into(), org.display().to_string()]);
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    let relay = RelayProc::start(&f).await;
    let db = dir.path().join("demo.db").display().to_string();
    let _agent = AgentProc::start_upstream(
        &relay,
        &relay.token(OWNER, false),
        "db",
        &["--sqlite", &db, "--allow", "@example.com"],
        "auto",
    )
    .await;

    gh.set_user(user("Alice@Example.com", true, "acme", "data"));
    let alice = sign_in(&relay, &gh).await.token();
    assert!(initialize(&relay, &alice).await.contains("\"result\""));

    gh.set_user(user("bob@example.com", true, "acme", "sales"));
    let bob = sign_in(&relay, &gh).await.token();
    assert!(initialize(&relay, &bob).await.contains("-32001"));
    assert!(gh.refusals().is_empty(), "{:?}", gh.refusals());

    let (code, out, err) = relay.admin(&["audit", "--json"]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let alice_allowed = events
        .iter()
        .find(|e| e["identity"] == "alice@example.com" && e["decision"] == "allow")
        .unwrap_or_else(|| panic!("no allowed event of Alice: {out}"));
    assert_eq!(
        alice_allowed["groups"],
        json!(["acme", "acme/data"]),
        "{out}"
    );
    let bob_denied = events
        .iter()
        .find(|e| e["identity"] == "bob@example.com" && e["decision"] == "deny")
        .unwrap_or_else(|| panic!("no denied event of Bob: {out}"));
    assert_eq!(bob_denied["groups"], json!(["acme", "acme/sales"]), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_refusals_an_unverified_email_and_a_wrong_secret() {
    let gh = GitHubStandIn::start(CLIENT_ID, SECRET).await;
    let f = flags(&gh, SECRET);
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    let relay = RelayProc::start(&f).await;
    gh.set_user(user("mallory@example.com", false, "acme", "data"));
    match sign_in(&relay, &gh).await {
        SignIn::Token(_) => panic!("an unverified email signed in"),
        SignIn::Refused(status, page) => {
            assert_eq!(status, 401, "{page}");
            assert!(page.contains("has not verified"), "{page}");
        }
    }

    // A relay with the wrong secret: the stand-in refuses the exchange.
    let f = flags(&gh, "not-the-secret");
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    let wrong = RelayProc::start(&f).await;
    gh.set_user(user("alice@example.com", true, "acme", "data"));
    match sign_in(&wrong, &gh).await {
        SignIn::Token(_) => panic!("signed in with a wrong client secret"),
        SignIn::Refused(status, page) => {
            assert_eq!(status, 401, "{page}");
            assert!(page.contains("code exchange failed"), "{page}");
        }
    }
    assert!(
        gh.refusals()
            .iter()
            .any(|r| r.contains("wrong client id or secret")),
        "{:?}",
        gh.refusals()
    );
}

/// The href of the sign-in page's "Sign in with GitHub" link.
fn github_link(page: &str) -> String {
    let end = page
        .find(">Sign in with GitHub</a>")
        .unwrap_or_else(|| panic!("no GitHub link on {page}"));
    let start = page[..end].rfind("href=\"").expect("the link's href") + "href=\"".len();
    page[start..end].trim_end_matches('"').replace("&amp;", "&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_hammering_the_sign_in_start_is_refused_while_others_sign_in() {
    use e2e::browser::{encode, location, Browser};
    const REDIRECT: &str = "http://127.0.0.1:53682/callback";
    let gh = GitHubStandIn::start(CLIENT_ID, SECRET).await;
    let f = flags(&gh, SECRET);
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    let relay = RelayProc::start(&f).await;
    gh.set_user(user("alice@example.com", true, "acme", "data"));
    let mut hammer = Browser::new(&relay);
    let reg = hammer
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
    let authorize = format!(
        "/oauth/authorize?{}",
        encode(&[
            ("response_type", "code"),
            ("client_id", &client_id),
            ("redirect_uri", REDIRECT),
            (
                "code_challenge",
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
            ),
            ("code_challenge_method", "S256"),
            ("resource", &relay.route_url("db")),
            ("scope", "mcp"),
        ])
    );
    // One anonymous client starts sign-in after sign-in, each in a fresh
    // session: after its burst, 429 with Retry-After.
    let mut refused = None;
    for i in 0..40 {
        hammer.clear_cookie();
        let page = hammer.get(&authorize).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let a = hammer.get(&github_link(&page.text())).await;
        match a.status.as_u16() {
            303 => assert!(location(&a).starts_with(&gh.url()), "{}", location(&a)),
            429 => {
                refused = Some((i, a));
                break;
            }
            other => panic!("{other}: {}", a.text()),
        }
    }
    let (after, a) = refused.expect("the hammering client is refused");
    assert!(after >= 10, "refused after {after} starts");
    let retry: u64 = a.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry >= 1);
    assert!(a.text().contains("Too many sign-ins"), "{}", a.text());
    // It stays refused...
    hammer.clear_cookie();
    let page = hammer.get(&authorize).await;
    let a = hammer.get(&github_link(&page.text())).await;
    assert_eq!(a.status, 429, "{}", a.text());

    // ... while another client starts a sign-in and completes it.
    let mut other = Browser::from_address(&relay, Some("127.0.0.2".parse().expect("ip")));
    let page = other.get(&authorize).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let to_provider = other.get(&github_link(&page.text())).await;
    assert_eq!(to_provider.status, 303, "{}", to_provider.text());
    let at = e2e::oidc_provider::plain("GET", &location(&to_provider), "text/plain", String::new())
        .await;
    assert_eq!(at.status, 302, "{}", at.body);
    let back = other.get(&at.location.expect("back to the relay")).await;
    assert_eq!(back.status, 303, "{}", back.text());
    assert!(
        location(&back).starts_with("/oauth/authorize?"),
        "{}",
        location(&back)
    );
    let consent = other.get(&location(&back)).await;
    assert_eq!(consent.status, 200, "{}", consent.text());
    assert!(
        consent.text().contains("alice@example.com"),
        "{}",
        consent.text()
    );
}
