//! QUIC, forced TCP, and auto falling back when the relay's UDP side is off.

use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};

async fn round_trip(relay: &RelayProc, token: &str) {
    let client = HttpsClient::new(&relay.ca(), false);
    let a = client
        .call(
            "POST",
            &format!("{}/echo", relay.route_url("demo")),
            Some(token),
            "ping",
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["body"], "ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_forced() {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(&[]).await;
    let agent = AgentProc::start(
        &relay,
        &relay.token("a@x", false),
        "demo",
        &up.url(),
        "quic",
    )
    .await;
    assert_eq!(agent.last_transport(), "quic");
    round_trip(&relay, &relay.token("a@x", true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_forced() {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(&[]).await;
    let agent =
        AgentProc::start(&relay, &relay.token("a@x", false), "demo", &up.url(), "tcp").await;
    assert_eq!(agent.last_transport(), "tcp");
    round_trip(&relay, &relay.token("a@x", true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_prefers_quic() {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(&[]).await;
    let agent = AgentProc::start(
        &relay,
        &relay.token("a@x", false),
        "demo",
        &up.url(),
        "auto",
    )
    .await;
    assert_eq!(agent.last_transport(), "quic");
    round_trip(&relay, &relay.token("a@x", true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_tcp_when_udp_is_closed() {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(&["--no-quic"]).await;
    let started = std::time::Instant::now();
    let agent = AgentProc::start(
        &relay,
        &relay.token("a@x", false),
        "demo",
        &up.url(),
        "auto",
    )
    .await;
    // Reported, not asserted: the machines are shared and noisy.
    eprintln!("auto fallback connected in {:?}", started.elapsed());
    assert_eq!(agent.last_transport(), "tcp");
    round_trip(&relay, &relay.token("a@x", true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_only_agent_fails_clearly_when_udp_is_closed() {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(&["--no-quic"]).await;
    let agent = AgentProc::spawn(
        &relay,
        &relay.token("a@x", false),
        "demo",
        &up.url(),
        "quic",
        &[],
    );
    assert!(
        agent
            .proc
            .wait_stderr("cannot reach the relay", std::time::Duration::from_secs(20))
            .await,
        "no clear retry message: {}",
        agent.proc.stderr_text()
    );
}
