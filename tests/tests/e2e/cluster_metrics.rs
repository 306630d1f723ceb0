//! Metrics per node: each node of a cluster serves its own on its admin
//! listener, names itself there (`drawbridge_node_info`, so that the
//! scrapes of several nodes can be told apart and joined), says how many
//! live nodes it sees, and counts the requests it forwards and receives.
//! A single relay exposes none of these.

use std::time::Duration;

use e2e::{HttpsClient, RelayProc, Upstream};

/// The lines of `node`'s `/metrics` that start with `name`.
async fn series(node: &RelayProc, name: &str) -> Vec<String> {
    let (status, text) = node.admin_get("/metrics").await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|l| l.starts_with(name))
        .map(str::to_owned)
        .collect()
}

async fn until_metric(node: &RelayProc, series: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = node.metric(series).await;
        if got == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} on {} is {got:?}, not {want}",
            node.addr
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const SENT: &str = r#"drawbridge_forwarded_requests_total{direction="sent",outcome="answered"}"#;
const RECEIVED: &str =
    r#"drawbridge_forwarded_requests_total{direction="received",outcome="accepted"}"#;
const REFUSED: &str =
    r#"drawbridge_forwarded_requests_total{direction="received",outcome="refused"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_names_itself_and_counts_what_it_forwards() {
    let upstream = Upstream::start("u1").await;
    let (_secret, nodes) = e2e::cluster::start_cluster(2).await;
    // Each names itself: its own id, the address agents dial for it.
    let mut ids = Vec::new();
    for node in &nodes {
        let info = series(node, "drawbridge_node_info{").await;
        assert_eq!(info.len(), 1, "{info:?}");
        let line = &info[0];
        assert!(
            line.ends_with(&format!(r#",address="{}"}} 1"#, node.addr)),
            "{line}"
        );
        let id = line
            .strip_prefix(r#"drawbridge_node_info{node=""#)
            .and_then(|l| l.split('"').next())
            .unwrap_or_else(|| panic!("{line}"))
            .to_owned();
        assert_eq!(id.len(), 16, "{line}");
        ids.push(id);
        until_metric(node, "drawbridge_cluster_live_nodes", 2.0).await;
        for s in [SENT, RECEIVED, REFUSED] {
            assert_eq!(node.metric(s).await, Some(0.0), "{s}");
        }
    }
    assert_ne!(ids[0], ids[1], "two nodes, two ids");

    // The agent holds a session to the first node only: the second
    // forwards, the first receives.
    let (_agent, client) = e2e::cluster::alice_agent(&nodes, &upstream.url(), 1).await;
    let http = HttpsClient::new(&nodes[1].ca(), false);
    // (Until the first node has recorded its agent's session, the second
    // answers 503 without forwarding.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    while i < 3 {
        let answer = http
            .get(
                &format!("{}/echo/m{i}", nodes[1].route_url("demo")),
                Some(&client),
            )
            .await;
        if answer.status == 503 && i == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(answer.status, 200, "{}", answer.text());
        i += 1;
    }
    // A request whose forwarding signature does not hold.
    let forged = http::Request::builder()
        .uri(format!("{}/echo/forged", nodes[0].route_url("demo")))
        .header("authorization", format!("Bearer {client}"))
        .header("drawbridge-forwarded", "t=1; node=n1; sig=00")
        .header("drawbridge-forwarded-for", "192.0.2.7:4000")
        .body(e2e::client::full_body(""))
        .expect("request");
    assert_eq!(
        HttpsClient::new(&nodes[0].ca(), false)
            .fetch(forged)
            .await
            .status,
        403
    );
    assert_eq!(nodes[1].metric(SENT).await, Some(3.0));
    assert_eq!(nodes[1].metric(RECEIVED).await, Some(0.0));
    assert_eq!(nodes[0].metric(SENT).await, Some(0.0));
    assert_eq!(nodes[0].metric(RECEIVED).await, Some(3.0));
    assert_eq!(nodes[0].metric(REFUSED).await, Some(1.0));

    // One node stops cleanly: the other sees one live node.
    let mut nodes = nodes;
    let stopped = nodes.remove(1);
    stopped.proc.signal("TERM");
    until_metric(&nodes[0], "drawbridge_cluster_live_nodes", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_relay_is_no_node() {
    let relay = RelayProc::start(&[]).await;
    for name in [
        "drawbridge_node_info",
        "drawbridge_cluster_live_nodes",
        "drawbridge_forwarded_requests",
    ] {
        let (_, text) = relay.admin_get("/metrics").await;
        assert!(!text.contains(name), "{name}: {text}");
    }
    // (Its other metrics are there.)
    assert!(!series(&relay, "drawbridge_agents_connected")
        .await
        .is_empty());
}
