//! A laptop changing networks mid-call (issue 7). Between the agent and the
//! relay sits a forwarder the test controls ([`e2e::netsim`]).
//!
//! * QUIC: the agent's datagrams suddenly come from another address (a new
//!   Wi-Fi, a hotspot, a NAT rebinding). The connection migrates: the call in
//!   flight completes and the agent never reconnects.
//! * TCP fallback (UDP blocked): the connection goes silent (no FIN, no RST).
//!   The call in flight ends with an error instead of hanging, the agent
//!   reconnects by itself, and the next call works.

use std::time::Duration;

use e2e::netsim::Network;
use e2e::upstream::pattern;
use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};
use http_body_util::BodyExt;

const OWNER: &str = "alice@example.com";

struct Setup {
    relay: RelayProc,
    net: Network,
    agent: AgentProc,
    upstream: Upstream,
    token: String,
    http: HttpsClient,
}

async fn setup(udp: bool, transport: &str) -> Setup {
    let upstream = Upstream::start("laptop").await;
    let relay = RelayProc::start(&[]).await;
    let net = Network::start(relay.addr, udp).await;
    let agent_token = relay.token(OWNER, false);
    let token = relay.token(OWNER, true);
    let mut agent = AgentProc::spawn_at(
        &net.url(),
        &relay,
        &agent_token,
        "roam",
        &["--http", &upstream.url(), "--plain-http"],
        transport,
        &[],
    );
    agent.wait_live().await;
    let http = HttpsClient::new(&relay.ca(), false);
    Setup {
        relay,
        net,
        agent,
        upstream,
        token,
        http,
    }
}

impl Setup {
    async fn get(&self, path: &str) -> http::Response<hyper::body::Incoming> {
        let req = http::Request::builder()
            .uri(format!("{}{path}", self.relay.route_url("roam")))
            .header("authorization", format!("Bearer {}", self.token))
            .body(e2e::client::full_body(""))
            .expect("request");
        self.http.send(req).await
    }

    fn live_lines(&self) -> usize {
        self.agent
            .proc
            .stdout
            .lock()
            .expect("lock")
            .iter()
            .filter(|l| l.contains("is live at"))
            .count()
    }
}

/// Reads the next data frame of `body` as text.
async fn next_text(body: &mut hyper::body::Incoming) -> Result<String, String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), body.frame()).await {
            Err(_) => return Err("no frame within 60 s: the call hangs".into()),
            Ok(None) => return Err("the body ended".into()),
            Ok(Some(Err(e))) => return Err(format!("the body failed: {e}")),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    return Ok(String::from_utf8_lossy(&d).into_owned());
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quic_a_call_in_flight_survives_a_change_of_network() {
    let mut s = setup(true, "quic").await;
    assert_eq!(s.agent.last_transport(), "quic");

    // A streaming call: event k+1 leaves the laptop only when released.
    let resp = s.get("/sse").await;
    assert_eq!(resp.status(), 200);
    let mut sse = resp.into_body();
    assert!(next_text(&mut sse)
        .await
        .expect("event 0")
        .contains("event 0"));

    // And a bulk download, half read.
    const BULK: u64 = 8 * 1024 * 1024;
    let resp = s.get(&format!("/bytes/{BULK}")).await;
    assert_eq!(resp.status(), 200);
    let mut bulk = resp.into_body();
    let mut got: Vec<u8> = Vec::new();
    while (got.len() as u64) < BULK / 2 {
        got.extend(next_text_bytes(&mut bulk).await);
    }

    // The laptop moves: its packets now come from another address.
    s.net.change_udp_path().await;
    s.upstream.release();
    let ev = next_text(&mut sse).await.expect("event 1 after the move");
    assert!(ev.contains("event 1"), "{ev}");
    while (got.len() as u64) < BULK {
        got.extend(next_text_bytes(&mut bulk).await);
    }
    assert_eq!(got.len() as u64, BULK);
    assert!(
        got.iter().enumerate().all(|(i, b)| *b == pattern(i as u64)),
        "the bulk body changed in flight"
    );
    s.upstream.release();
    assert!(next_text(&mut sse)
        .await
        .expect("event 2")
        .contains("event 2"));

    assert!(
        s.net.replies_on_newest_path() > 0,
        "the relay never answered on the new path"
    );
    assert_eq!(
        s.live_lines(),
        1,
        "the agent reconnected instead of migrating"
    );
    // And new calls use the migrated connection.
    let a = s
        .http
        .get(&format!("{}/id", s.relay.route_url("roam")), Some(&s.token))
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "laptop");
    assert_eq!(s.live_lines(), 1);
}

async fn next_text_bytes(body: &mut hyper::body::Incoming) -> Vec<u8> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(60), body.frame())
            .await
            .expect("no frame within 60 s")
            .expect("the body ended early")
            .expect("the body failed");
        if let Ok(d) = frame.into_data() {
            return d.to_vec();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_a_dead_network_ends_the_call_with_an_error_and_the_agent_reconnects() {
    // UDP blocked: the agent falls back to TLS over TCP.
    let s = setup(false, "auto").await;
    assert_eq!(s.agent.last_transport(), "tcp");
    let resp = s.get("/sse").await;
    assert_eq!(resp.status(), 200);
    let mut sse = resp.into_body();
    assert!(next_text(&mut sse)
        .await
        .expect("event 0")
        .contains("event 0"));

    // The network dies under the connection: no FIN, no RST, just silence.
    s.net.freeze_tcp();
    s.upstream.release();
    let end = next_text(&mut sse).await;
    assert!(
        matches!(&end, Err(e) if e.contains("failed") || e.contains("ended")),
        "the interrupted call must end with an error, not hang or go on: {end:?}"
    );

    // The agent notices the silence and reconnects by itself.
    let mut agent = s.agent;
    agent.wait_live().await;
    let a = s
        .http
        .get(&format!("{}/id", s.relay.route_url("roam")), Some(&s.token))
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.text(), "laptop");
}
