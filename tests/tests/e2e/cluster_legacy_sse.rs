//! Legacy HTTP+SSE sessions across the nodes of a cluster: the stream is
//! held by the node that opened it, whose id the session id carries; a
//! message POSTed for it to another node is forwarded, once, to that node
//! (if it is live), which checks the caller, decides, audits and answers
//! on the stream as for a message POSTed to it. The nodes share one
//! PostgreSQL database (tests/src/postgres.rs).

use std::time::Duration;

use e2e::client::{full_body, next_message, read_until};
use e2e::{AgentProc, HttpsClient, RelayProc, TempDir};

fn post(url: &str, token: &str, body: &str) -> http::Request<e2e::client::Body> {
    http::Request::builder()
        .method("POST")
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(full_body(body.to_owned()))
        .expect("request")
}

/// How many audit events of each node hold `"<key>":"<value>"`.
fn audited(nodes: &[RelayProc], key: &str, value: &str) -> Vec<usize> {
    let needle = format!("\"{key}\":\"{value}\"");
    nodes
        .iter()
        .map(|node| {
            std::fs::read_to_string(node.state.path().join("audit.jsonl"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(&needle))
                .count()
        })
        .collect()
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#;

fn count_rows(id: u32, table: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"read_query","arguments":{{"query":"SELECT count(*) AS n FROM {table}"}}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_sessions_messages_reach_the_node_holding_its_stream() {
    let (_secret, mut nodes) = e2e::cluster::start_cluster(3).await;
    let dir = TempDir::new("cluster-legacy-db");
    let db = dir.path().join("demo.db").display().to_string();
    let agent_token = nodes[0].token("alice@example.com", false);
    let _agent = AgentProc::start_upstream(
        &nodes[0],
        &agent_token,
        "db",
        &["--sqlite", &db, "--allow", "bob@example.com"],
        "auto",
    )
    .await;
    for node in &nodes {
        e2e::cluster::until_agents(node, 1.0, Duration::from_secs(20)).await;
    }
    let alice = nodes[0].token("alice@example.com", true);
    let bob = nodes[0].token("bob@example.com", true);
    let client = HttpsClient::new(&nodes[0].ca(), false);

    // The stream, on node 1; its session id names node 1.
    let resp = client
        .send(
            http::Request::builder()
                .uri(nodes[0].route_url("db"))
                .header("authorization", format!("Bearer {alice}"))
                .header("accept", "text/event-stream")
                .body(full_body(String::new()))
                .expect("request"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.into_body();
    let mut text = String::new();
    read_until(&mut stream, &mut text, "\n\n").await;
    let endpoint = text
        .strip_prefix("event: endpoint\ndata: ")
        .and_then(|t| t.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("not an endpoint event: {text:?}"))
        .to_owned();
    text.clear();
    let id = endpoint
        .strip_prefix("/mcp/db?session_id=")
        .unwrap_or_else(|| panic!("endpoint {endpoint:?}"))
        .to_owned();
    let (node_part, random) = id.split_once('-').unwrap_or_else(|| panic!("{id}"));
    assert_eq!(node_part.len(), 16, "{id}");
    assert_eq!(random.len(), 32, "{id}");
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let on = |i: usize| format!("{}{endpoint}", urls[i]);

    // initialize on node 1, the rest on nodes 2 and 3: answered on the stream.
    let a = client.fetch(post(&on(0), &alice, INITIALIZE)).await;
    assert_eq!(a.status, 202, "{}", a.text());
    let init = next_message(&mut stream, &mut text).await;
    assert_eq!(init["id"], 1, "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "drawbridge-sqlite");
    let a = client
        .fetch(post(
            &on(1),
            &alice,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        ))
        .await;
    assert_eq!(a.status, 202, "{}", a.text());
    for (i, node) in [1usize, 2].into_iter().enumerate() {
        let id = 10 + i as u32;
        let a = client
            .fetch(post(&on(node), &alice, &count_rows(id, "sqlite_master")))
            .await;
        assert_eq!(a.status, 202, "node {}: {}", node + 1, a.text());
        let answer = next_message(&mut stream, &mut text).await;
        assert_eq!(answer["id"], id, "{answer}");
        assert!(answer["result"].is_object(), "{answer}");
    }

    // Another identity, allowed on the route, never reaches the session,
    // on whichever node it asks.
    for node in 0..3 {
        let a = client
            .fetch(post(
                &on(node),
                &bob,
                r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
            ))
            .await;
        assert_eq!(a.status, 404, "node {}: {}", node + 1, a.text());
        assert_eq!(a.json()["error"], "unknown_session", "{}", a.text());
    }
    // A session id that names no live node is not forwarded anywhere.
    let forged = format!(
        "{}/mcp/db?session_id=0123456789abcdef-{random}",
        nodes[1].url()
    );
    let a = client.fetch(post(&forged, &alice, PING)).await;
    assert_eq!(a.status, 404, "{}", a.text());
    assert_eq!(a.json()["error"], "unknown_session", "{}", a.text());

    // Every message audited once, by node 1, which holds the stream.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let method = |m: &str| audited(&nodes, "method", m);
    assert_eq!(method("initialize"), [1, 0, 0]);
    assert_eq!(method("notifications/initialized"), [1, 0, 0]);
    assert_eq!(method("tools/call"), [2, 0, 0]);
    // Bob's three refusals, by the node that refused them.
    assert_eq!(audited(&nodes, "identity", "bob@example.com"), [3, 0, 0]);

    // Node 1 dies: the session is gone with it. Until its heartbeat is
    // stale it cannot be reached (502, naming it); then 404, as for any
    // unknown session.
    let holder = nodes[0].addr.to_string();
    nodes[0].proc.signal("KILL");
    nodes[0].proc.wait_exit(Duration::from_secs(10)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let a = client.fetch(post(&on(1), &alice, PING)).await;
        if a.status == 404 {
            assert_eq!(a.json()["error"], "unknown_session", "{}", a.text());
            break;
        }
        assert_eq!(a.status, 502, "{}", a.text());
        assert!(a.text().contains(&holder), "{}", a.text());
        assert!(tokio::time::Instant::now() < deadline, "still 502");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    nodes.remove(0);
}

const PING: &str = r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#;
