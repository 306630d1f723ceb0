//! Sign-ins across relay nodes on one PostgreSQL database: one browser
//! whose requests a load balancer spreads over the nodes signs in at an
//! upstream OpenID Connect provider (the sign-in page from one node, the
//! provider's answer to another, consent on a third), and an `agent login`
//! device code, approved, polled on three nodes at once, gives one token.

use std::time::{Duration, Instant};

use e2e::browser::{add_user, encode, hidden, location, Browser};
use e2e::cluster::start_nodes;
use e2e::oidc_provider::OidcProvider;
use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};
use serde_json::json;

const ALICE: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery";
const REDIRECT: &str = "http://127.0.0.1:53682/callback";
/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// `url`'s path and query: the same request, to whichever node.
fn path_of(url: &str) -> String {
    let u = url::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    }
}

/// Waits (a generous bound) until `token` gets a 200 from `node`'s route.
async fn until_served(client: &HttpsClient, node: &RelayProc, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = client
            .get(&format!("{}/echo", node.route_url("demo")), Some(token))
            .await;
        if a.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {} {}",
            node.url(),
            a.status,
            a.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sign-in page from node 1, the provider link followed on node 2, the
/// provider's answer (the OIDC callback) on node 3, consent on node 2, the
/// code redeemed on node 3: the token works on every node. The provider's
/// answer replayed to node 1 finds nothing: it was taken once, cluster-wide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_at_the_provider_spread_over_three_nodes_issues_a_token() {
    let idp = OidcProvider::start().await;
    idp.set_user("alice", json!({"email": ALICE, "email_verified": true}))
        .await;
    let url = e2e::postgres::shared().create_database().await;
    let nodes = start_nodes(
        &url,
        3,
        &[
            "--oidc-issuer",
            &idp.issuer,
            "--oidc-client-id",
            "drawbridge-e2e",
            "--oidc-client-secret",
            "e2e-client-secret-0123",
            "--oidc-name",
            "Mock IdP",
            "--upstream-dev-allow-http-loopback",
        ],
    )
    .await;
    let up = Upstream::start("u").await;
    let agent_token = nodes[0].token(ALICE, false);
    let mut agents = Vec::new();
    for node in &nodes {
        agents.push(AgentProc::start(node, &agent_token, "demo", &up.url(), "auto").await);
    }

    let mut b = Browser::new(&nodes[0]);
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
    // Every node's route URL is the cluster's (node 1's name).
    let resource = nodes[0].route_url("demo");
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
    // Node 1: the sign-in page.
    let page = b.get(&format!("/oauth/authorize?{query}")).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let body = page.text();
    let marker = ">Sign in with Mock IdP</a>";
    let end = body
        .find(marker)
        .unwrap_or_else(|| panic!("no provider link on {body}"));
    let start = body[..end].rfind("href=\"").expect("the link's href") + "href=\"".len();
    let href = body[start..end].trim_end_matches('"').replace("&amp;", "&");
    // Node 2: off to the provider.
    b.to_node(&nodes[1]);
    let to_provider = b.get(&href).await;
    assert_eq!(to_provider.status, 303, "{}", to_provider.text());
    let back = idp.sign_in(&location(&to_provider), "alice").await;
    assert!(
        back.starts_with(&format!("{}/oauth/callback/oidc?", nodes[0].url())),
        "{back}"
    );
    // Node 3: the provider's answer.
    b.to_node(&nodes[2]);
    let answer = b.get(&path_of(&back)).await;
    assert_eq!(answer.status, 303, "{}", answer.text());
    // Replayed to node 1: taken already.
    b.to_node(&nodes[0]);
    let replay = b.get(&path_of(&back)).await;
    assert_eq!(replay.status, 400, "{}", replay.text());
    assert!(
        replay.text().contains("Sign-in expired"),
        "{}",
        replay.text()
    );
    // Node 2: consent.
    b.to_node(&nodes[1]);
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
    let code = e2e::upstream_sign_in::param(&location(&a), "code").expect("a code");
    // Node 3: the code for tokens.
    b.to_node(&nodes[2]);
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
    let access = t.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let client = HttpsClient::new(&nodes[0].ca(), false);
    for node in &nodes {
        until_served(&client, node, &access).await;
    }
}

/// An `agent login` device code, approved on node 2 (signed in with a
/// password there), then polled on the three nodes at once: exactly one
/// poll gets the token; the others are told the code is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_device_code_polled_on_three_nodes_at_once_gives_one_token() {
    let url = e2e::postgres::shared().create_database().await;
    let nodes = start_nodes(&url, 3, &["--device-poll-interval", "1s"]).await;
    add_user(&nodes[0], ALICE, PASSWORD);
    for round in 0..4 {
        let mut b = Browser::new(&nodes[0]);
        let a = b
            .form(
                "/oauth/device_authorization",
                &[("client_id", "drawbridge-agent")],
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
        let v = a.json();
        let device_code = v["device_code"].as_str().expect("device_code").to_owned();
        let user_code = v["user_code"].as_str().expect("user_code").to_owned();
        // Node 2: signed in, approved.
        b.to_node(&nodes[1]);
        let page = b.get(&format!("/device?user_code={user_code}")).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let a = b
            .form(
                "/device/login",
                &[
                    ("csrf", &hidden(&page.text(), "csrf")),
                    ("user_code", &user_code),
                    ("email", ALICE),
                    ("password", PASSWORD),
                ],
            )
            .await;
        assert_eq!(a.status, 303, "{}", a.text());
        let page = b.get(&location(&a)).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let body = page.text();
        assert!(body.contains("Approve this agent?"), "{body}");
        let a = b
            .form(
                "/device/approve",
                &[
                    ("csrf", &hidden(&body, "csrf")),
                    ("user_code", &hidden(&body, "user_code")),
                    ("decision", "approve"),
                ],
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert!(a.text().contains("Agent approved"), "{}", a.text());
        // The three nodes at once.
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code.as_str()),
            ("client_id", "drawbridge-agent"),
        ];
        let mut bs: Vec<Browser> = nodes.iter().map(Browser::new).collect();
        let [b0, b1, b2] = &mut bs[..] else {
            unreachable!()
        };
        let (x, y, z) = tokio::join!(
            b0.form("/oauth/token", &form),
            b1.form("/oauth/token", &form),
            b2.form("/oauth/token", &form)
        );
        let answers = [x, y, z];
        let won: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
        assert_eq!(
            won.len(),
            1,
            "round {round}: {:?}",
            answers.iter().map(|a| a.text()).collect::<Vec<_>>()
        );
        assert!(
            won[0].json()["access_token"].as_str().is_some(),
            "{}",
            won[0].text()
        );
        for lost in answers.iter().filter(|a| a.status != 200) {
            assert_eq!(lost.status, 400, "{}", lost.text());
            assert_eq!(lost.json()["error"], "invalid_grant", "{}", lost.text());
        }
    }
}
