//! Tokens: who may connect an agent, who may call a route, and how tokens
//! are governed (list, revoke, rotate, expire).

use std::time::Duration;

use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};

struct Setup {
    relay: RelayProc,
    _agent: AgentProc,
    _up: Upstream,
    client: HttpsClient,
}

async fn setup() -> Setup {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(&[]).await;
    let agent = AgentProc::start(
        &relay,
        &relay.token("alice@x", false),
        "demo",
        &up.url(),
        "auto",
    )
    .await;
    let client = HttpsClient::new(&relay.ca(), false);
    Setup {
        relay,
        _agent: agent,
        _up: up,
        client,
    }
}

impl Setup {
    async fn call(&self, auth: Option<&str>) -> e2e::client::Answer {
        let mut req =
            http::Request::builder().uri(format!("{}/echo", self.relay.route_url("demo")));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        self.client
            .fetch(req.body(e2e::client::Body::default()).expect("req"))
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_invalid_tokens_get_401_with_a_challenge() {
    let s = setup().await;
    let agent_token = s.relay.token("alice@x", false);
    let cases = [
        (None, None),
        (
            Some(
                "Bearer dbct_0000000000000000000000000000000000000000000000000000000000000000"
                    .to_owned(),
            ),
            Some("invalid_token"),
        ),
        (Some("Bearer not-a-token".to_owned()), Some("invalid_token")),
        (
            Some("Basic YWxpY2U6cHc=".to_owned()),
            Some("invalid_request"),
        ),
        (Some(format!("Bearer {agent_token}")), Some("invalid_token")),
    ];
    for (auth, error) in cases {
        let a = s.call(auth.as_deref()).await;
        assert_eq!(a.status, 401, "{auth:?}: {}", a.text());
        let challenge = a.headers["www-authenticate"].to_str().expect("ascii");
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        if let Some(e) = error {
            assert!(
                challenge.contains(&format!("error=\"{e}\"")),
                "{auth:?}: {challenge}"
            );
        }
    }
    let a = s.call(Some(&format!("Bearer {agent_token}"))).await;
    assert!(
        a.text().contains("agent token cannot call routes"),
        "{}",
        a.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_route_owners_tokens_are_accepted() {
    let s = setup().await;
    let bob = s.relay.token("bob@x", true);
    let a = s.call(Some(&format!("Bearer {bob}"))).await;
    assert_eq!(a.status, 403, "{}", a.text());
    let alice = s.relay.token("alice@x", true);
    assert_eq!(s.call(Some(&format!("Bearer {alice}"))).await.status, 200);
    let a = s
        .client
        .get(&s.relay.route_url("nosuchroute"), Some(&alice))
        .await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["error"], "unknown_route");
    // Without a token, an unknown route is indistinguishable from a known one.
    assert_eq!(
        s.client
            .get(&s.relay.route_url("nosuchroute"), None)
            .await
            .status,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_token_fails_on_its_next_request() {
    let s = setup().await;
    let t = s.relay.token("alice@x", true);
    let id = s.relay.last_token_id();
    assert_eq!(s.call(Some(&format!("Bearer {t}"))).await.status, 200);
    let (code, _, err) = s.relay.admin(&["token", "revoke", &id]);
    assert_eq!(code, 0, "{err}");
    let a = s.call(Some(&format!("Bearer {t}"))).await;
    assert_eq!(a.status, 401);
    assert!(a.text().contains("revoked"), "{}", a.text());
    // Revoking twice is a clear error.
    let (code, _, err) = s.relay.admin(&["token", "revoke", &id]);
    assert_ne!(code, 0);
    assert!(err.contains("already revoked"), "{err}");
}

/// The relay keeps what every request reads (tokens, route owners) in
/// memory; a change by another process (the admin commands on the same
/// state directory) is seen by the very next request all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_by_another_process_reach_the_next_request() {
    let s = setup().await;
    let t = s.relay.token("alice@x", true);
    let id = s.relay.last_token_id();
    let other = s.relay.token("alice@x", true);
    for _ in 0..3 {
        assert_eq!(s.call(Some(&format!("Bearer {t}"))).await.status, 200);
        assert_eq!(s.call(Some(&format!("Bearer {other}"))).await.status, 200);
    }
    let (code, _, err) = s.relay.admin(&["token", "rotate", &id, "--grace", "0s"]);
    assert_eq!(code, 0, "{err}");
    let a = s.call(Some(&format!("Bearer {t}"))).await;
    assert_eq!(a.status, 401, "{}", a.text());
    assert!(a.text().contains("expired"), "{}", a.text());
    // The other token is still served (from memory or not).
    assert_eq!(s.call(Some(&format!("Bearer {other}"))).await.status, 200);
    // A released route is unknown on the next request.
    let (code, _, err) = s.relay.admin(&["route", "release", "demo"]);
    assert_eq!(code, 0, "{err}");
    let a = s.call(Some(&format!("Bearer {other}"))).await;
    assert_eq!(a.status, 404, "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_agent_token_disconnects_the_agent() {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(&[]).await;
    let token = relay.token("alice@x", true);
    let agent_token = relay.token("alice@x", false);
    let agent_id = relay.last_token_id();
    let mut agent = AgentProc::start(&relay, &agent_token, "demo", &up.url(), "auto").await;
    let (code, _, err) = relay.admin(&["token", "revoke", &agent_id]);
    assert_eq!(code, 0, "{err}");
    let exit = agent.proc.wait_exit(Duration::from_secs(20)).await;
    assert_ne!(exit, Some(0));
    assert!(
        agent.proc.stderr_text().contains("revoked"),
        "{}",
        agent.proc.stderr_text()
    );
    let client = HttpsClient::new(&relay.ca(), false);
    let a = client.get(&relay.route_url("demo"), Some(&token)).await;
    assert_eq!(a.status, 503, "{}", a.text());
    // And it cannot come back with the same token.
    let mut again = AgentProc::spawn(&relay, &agent_token, "demo", &up.url(), "auto", &[]);
    assert_ne!(again.proc.wait_exit(Duration::from_secs(20)).await, Some(0));
    assert!(
        again
            .proc
            .stderr_text()
            .contains("agent token refused: the token was revoked"),
        "{}",
        again.proc.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_agent_token_is_refused_clearly() {
    let relay = RelayProc::start(&[]).await;
    for bad in [
        "dbat_0000000000000000000000000000000000000000000000000000000000000000".to_owned(),
        relay.token("a@x", true),
    ] {
        let mut a = AgentProc::spawn(&relay, &bad, "demo", "http://127.0.0.1:1", "auto", &[]);
        assert_ne!(a.proc.wait_exit(Duration::from_secs(20)).await, Some(0));
        let err = a.proc.stderr_text();
        assert!(err.contains("refused this agent"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_the_old_token_for_its_grace_period() {
    let s = setup().await;
    let old = s.relay.token("alice@x", true);
    let id = s.relay.last_token_id();
    let (code, new, err) = s.relay.admin(&["token", "rotate", &id, "--grace", "1h"]);
    assert_eq!(code, 0, "{err}");
    let new = new.trim().to_owned();
    assert!(new.starts_with("dbct_"));
    assert_eq!(s.call(Some(&format!("Bearer {old}"))).await.status, 200);
    assert_eq!(s.call(Some(&format!("Bearer {new}"))).await.status, 200);
    let new_id = s.relay.last_token_id();
    let (code, newer, err) = s
        .relay
        .admin(&["token", "rotate", &new_id, "--grace", "0s"]);
    assert_eq!(code, 0, "{err}");
    let a = s.call(Some(&format!("Bearer {new}"))).await;
    assert_eq!(a.status, 401);
    assert!(a.text().contains("expired"), "{}", a.text());
    assert_eq!(
        s.call(Some(&format!("Bearer {}", newer.trim())))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_the_inventory_says_so() {
    let s = setup().await;
    let (code, out, err) = s.relay.admin(&[
        "token",
        "create",
        "--owner",
        "alice@x",
        "--client",
        "--name",
        "ci-bot",
        "--expires",
        "1s",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().count(),
        1,
        "the token is alone on stdout: {out:?}"
    );
    let t = out.trim();
    assert!(t.starts_with("dbct_") && t.len() == 69, "{t}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let a = s.call(Some(&format!("Bearer {t}"))).await;
    assert_eq!(a.status, 401);
    assert!(a.text().contains("expired"), "{}", a.text());

    let (code, list, _) = s.relay.admin(&["token", "list"]);
    assert_eq!(code, 0);
    let row = list.lines().find(|l| l.contains("ci-bot")).expect("listed");
    assert!(
        row.contains("client") && row.contains("expired") && row.contains("alice@x"),
        "{row}"
    );
    assert!(!list.contains(t), "the inventory never shows secrets");
    let (_, json, _) = s.relay.admin(&["token", "list", "--json"]);
    let agent_row = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .find(|v| v["kind"] == "agent")
        .expect("agent token listed");
    assert!(
        agent_row["last_used_at"].is_i64(),
        "last use recorded: {agent_row}"
    );
}
