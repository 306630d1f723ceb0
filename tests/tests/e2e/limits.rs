//! Resource bounds (issue 7): request rate limits per identity and per
//! route (429 with Retry-After), and slow clients cut off by timeouts while
//! everyone else is served.

use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

struct Setup {
    relay: RelayProc,
    _agents: Vec<AgentProc>,
    _upstream: Upstream,
    http: HttpsClient,
}

/// A relay with `relay_args`, and routes `a` and `b` owned by alice, whose
/// agents allow bob too.
async fn setup(relay_args: &[&str]) -> Setup {
    let upstream = Upstream::start("u").await;
    let relay = RelayProc::start(relay_args).await;
    let agent_token = relay.token(ALICE, false);
    let mut agents = Vec::new();
    for route in ["a", "b"] {
        let mut a = AgentProc::spawn(
            &relay,
            &agent_token,
            route,
            &upstream.url(),
            "auto",
            &["--allow", BOB],
        );
        a.wait_live().await;
        agents.push(a);
    }
    let http = HttpsClient::new(&relay.ca(), false);
    Setup {
        relay,
        _agents: agents,
        _upstream: upstream,
        http,
    }
}

impl Setup {
    async fn call(&self, route: &str, token: &str) -> e2e::client::Answer {
        self.http
            .get(&format!("{}/id", self.relay.route_url(route)), Some(token))
            .await
    }
}

fn retry_after(a: &e2e::client::Answer) -> u64 {
    a.headers
        .get("retry-after")
        .expect("Retry-After on a 429")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_over_its_rate_gets_429_with_retry_after_and_others_are_served() {
    let s = setup(&["--rate-limit-identity", "3/min"]).await;
    let alice = s.relay.token(ALICE, true);
    let bob = s.relay.token(BOB, true);
    for _ in 0..3 {
        let a = s.call("a", &alice).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    // The limit is per identity, over every route.
    let over = s.call("b", &alice).await;
    assert_eq!(over.status, 429, "{}", over.text());
    let wait = retry_after(&over);
    assert!((1..=20).contains(&wait), "Retry-After {wait}");
    let v = over.json();
    assert_eq!(v["error"], "rate_limited");
    let msg = v["message"].as_str().expect("message");
    assert!(msg.contains("identity") && msg.contains("3/min"), "{msg}");
    // Bob has his own budget.
    let a = s.call("a", &bob).await;
    assert_eq!(a.status, 200, "{}", a.text());
    // The refusal is audited with its rule.
    let (code, out, err) = s.relay.admin(&["audit", "--decision", "deny", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rate-limit-identity"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_over_its_rate_gets_429_for_everyone_and_other_routes_are_served() {
    let s = setup(&["--rate-limit-route", "4/h"]).await;
    let alice = s.relay.token(ALICE, true);
    let bob = s.relay.token(BOB, true);
    for token in [&alice, &bob, &alice, &bob] {
        let a = s.call("a", token).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    for token in [&alice, &bob] {
        let over = s.call("a", token).await;
        assert_eq!(over.status, 429, "{}", over.text());
        // 4/h: one request every 15 minutes.
        let wait = retry_after(&over);
        assert!((800..=900).contains(&wait), "Retry-After {wait}");
        assert!(over.text().contains("route"), "{}", over.text());
    }
    let a = s.call("b", &alice).await;
    assert_eq!(a.status, 200, "{}", a.text());
}

#[test]
fn a_malformed_rate_is_refused_at_start() {
    let out = std::process::Command::new(e2e::procs::bin("relay"))
        .args(["serve", "--rate-limit-route", "10/fortnight"])
        .output()
        .expect("run relay");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid rate \"10/fortnight\": expected N/s, N/min or N/h"),
        "{err}"
    );
}
