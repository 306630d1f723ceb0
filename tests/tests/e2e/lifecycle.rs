//! Agents and relays coming and going: restarts, kills, slow and missing
//! local servers, replicas, route claims, graceful stop.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};
use http::Request;
use http_body_util::BodyExt;

async fn echo(client: &HttpsClient, relay: &RelayProc, token: &str) -> http::StatusCode {
    client
        .call(
            "POST",
            &format!("{}/echo", relay.route_url("demo")),
            Some(token),
            "hi",
        )
        .await
        .status
}

async fn restart_and_reconnect(transport: &str) {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(&[]).await;
    let client_token = relay.token("a@x", true);
    let mut agent = AgentProc::start(
        &relay,
        &relay.token("a@x", false),
        "demo",
        &up.url(),
        transport,
    )
    .await;
    let client = HttpsClient::new(&relay.ca(), false);
    assert_eq!(echo(&client, &relay, &client_token).await, 200);

    // Graceful restart: the relay says GoAway, the agent comes back by itself.
    let t = Instant::now();
    let relay = relay.restart().await;
    agent.wait_live().await;
    eprintln!(
        "{transport}: route back {:?} after the relay was told to stop",
        t.elapsed()
    );
    let client = HttpsClient::new(&relay.ca(), false);
    assert_eq!(echo(&client, &relay, &client_token).await, 200);

    // Crash: SIGKILL, no goodbye. The agent notices by keep-alive and returns.
    let RelayProc {
        mut proc,
        addr,
        state,
        extra_args,
        ..
    } = relay;
    proc.kill().await;
    drop(proc);
    let extra: Vec<&str> = extra_args.iter().map(String::as_str).collect();
    let relay = RelayProc::start_with(state, &addr.to_string(), &extra).await;
    agent.wait_live().await;
    let client = HttpsClient::new(&relay.ca(), false);
    assert_eq!(echo(&client, &relay, &client_token).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reconnects_after_relay_restart_over_quic() {
    restart_and_reconnect("quic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reconnects_after_relay_restart_over_tcp() {
    restart_and_reconnect("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_gives_503_naming_the_route() {
    for transport in ["quic", "tcp"] {
        let up = Upstream::start("u").await;
        let relay = RelayProc::start(&[]).await;
        let token = relay.token("a@x", true);
        let mut agent = AgentProc::start(
            &relay,
            &relay.token("a@x", false),
            "demo",
            &up.url(),
            transport,
        )
        .await;
        let client = HttpsClient::new(&relay.ca(), false);
        assert_eq!(echo(&client, &relay, &token).await, 200);
        agent.proc.kill().await;
        // The relay notices at once on TCP, within three keep-alives on QUIC.
        let deadline = Instant::now() + Duration::from_secs(20);
        let answer = loop {
            let a = client
                .call(
                    "POST",
                    &format!("{}/echo", relay.route_url("demo")),
                    Some(&token),
                    "x",
                )
                .await;
            if a.status == 503 || Instant::now() > deadline {
                break a;
            }
            assert!(
                a.status == 502 || a.status == 200,
                "unexpected {} while the relay notices: {}",
                a.status,
                a.text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(answer.status, 503, "{transport}: {}", answer.text());
        assert_eq!(answer.json()["error"], "agent_unavailable");
        assert!(
            answer.text().contains("'demo'"),
            "the 503 names the route: {}",
            answer.text()
        );
        assert!(answer.headers.contains_key("retry-after"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_agent_gives_504_and_the_route_keeps_working() {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(&["--response-timeout", "1s"]).await;
    let token = relay.token("a@x", true);
    let _agent = AgentProc::start(
        &relay,
        &relay.token("a@x", false),
        "demo",
        &up.url(),
        "auto",
    )
    .await;
    let client = HttpsClient::new(&relay.ca(), false);
    let a = client
        .get(&format!("{}/hang", relay.route_url("demo")), Some(&token))
        .await;
    assert_eq!(a.status, 504, "{}", a.text());
    assert_eq!(a.json()["error"], "agent_timeout");
    assert_eq!(echo(&client, &relay, &token).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_local_server_gives_502() {
    // A port with nothing listening on it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let relay = RelayProc::start(&[]).await;
    let token = relay.token("a@x", true);
    let _agent = AgentProc::start(
        &relay,
        &relay.token("a@x", false),
        "demo",
        &format!("http://{closed}"),
        "auto",
    )
    .await;
    let client = HttpsClient::new(&relay.ca(), false);
    let a = client.get(&relay.route_url("demo"), Some(&token)).await;
    assert_eq!(a.status, 502, "{}", a.text());
    assert_eq!(a.json()["error"], "upstream_unreachable");
    assert!(
        a.text().contains("could not reach the local server"),
        "{}",
        a.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_one_owner_share_a_route() {
    let u1 = Upstream::start("one").await;
    let u2 = Upstream::start("two").await;
    let relay = RelayProc::start(&[]).await;
    let token = relay.token("a@x", true);
    let _a1 = AgentProc::start(
        &relay,
        &relay.token("a@x", false),
        "demo",
        &u1.url(),
        "quic",
    )
    .await;
    let _a2 = AgentProc::start(&relay, &relay.token("a@x", false), "demo", &u2.url(), "tcp").await;
    let client = HttpsClient::new(&relay.ca(), false);
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let a = client
            .get(&format!("{}/id", relay.route_url("demo")), Some(&token))
            .await;
        assert_eq!(a.status, 200);
        seen.insert(a.text());
    }
    assert_eq!(seen, HashSet::from(["one".to_owned(), "two".to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_owner_cannot_take_a_route() {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(&[]).await;
    let token = relay.token("alice@x", true);
    let _alice = AgentProc::start(
        &relay,
        &relay.token("alice@x", false),
        "demo",
        &up.url(),
        "auto",
    )
    .await;
    let mut bob = AgentProc::spawn(
        &relay,
        &relay.token("bob@x", false),
        "demo",
        &up.url(),
        "auto",
        &[],
    );
    let code = bob.proc.wait_exit(Duration::from_secs(20)).await;
    assert_ne!(code, Some(0));
    assert!(
        bob.proc
            .stderr_text()
            .contains("route 'demo' belongs to another owner"),
        "{}",
        bob.proc.stderr_text()
    );
    let client = HttpsClient::new(&relay.ca(), false);
    assert_eq!(
        echo(&client, &relay, &token).await,
        200,
        "alice still serves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_route_name_is_refused_before_dialing() {
    let relay = RelayProc::start(&[]).await;
    let mut a = AgentProc::spawn(
        &relay,
        &relay.token("a@x", false),
        "Not_Valid",
        "http://127.0.0.1:1",
        "auto",
        &[],
    );
    assert_ne!(a.proc.wait_exit(Duration::from_secs(20)).await, Some(0));
    assert!(
        a.proc
            .stderr_text()
            .contains("may only contain lowercase letters"),
        "{}",
        a.proc.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_drains_in_flight_requests_then_says_goodbye() {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(&["--drain-timeout", "30s"]).await;
    let token = relay.token("a@x", true);
    let mut agent = AgentProc::start(
        &relay,
        &relay.token("a@x", false),
        "demo",
        &up.url(),
        "auto",
    )
    .await;
    let client = HttpsClient::new(&relay.ca(), false);

    // An SSE stream is in flight, held open by the upstream.
    let req = Request::builder()
        .uri(format!("{}/sse", relay.route_url("demo")))
        .header("authorization", format!("Bearer {token}"))
        .body(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("req");
    let resp = client.send(req).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body
        .frame()
        .await
        .expect("frame")
        .expect("ok")
        .into_data()
        .expect("data");
    assert!(String::from_utf8_lossy(&first).contains("event 0"));

    agent.proc.signal("INT");
    assert!(
        relay
            .proc
            .wait_stderr("agent is leaving", Duration::from_secs(10))
            .await
    );
    // New requests are no longer sent to the leaving agent.
    let a = client
        .get(&format!("{}/id", relay.route_url("demo")), Some(&token))
        .await;
    assert_eq!(a.status, 503, "{}", a.text());

    // The in-flight stream still completes.
    up.release();
    up.release();
    let mut rest = String::new();
    while let Some(f) = body.frame().await {
        if let Ok(d) = f
            .expect("the in-flight stream completes cleanly")
            .into_data()
        {
            rest.push_str(&String::from_utf8_lossy(&d));
        }
    }
    assert!(rest.contains("event 2"), "{rest:?}");
    assert_eq!(agent.proc.wait_exit(Duration::from_secs(15)).await, Some(0));
}
