//! Agents and nodes: relays that share their state and a cluster secret are
//! nodes of one cluster; each tells its agents (protocol 6) the live nodes,
//! and an agent holds a session to each, up to `--relay-connections`, so
//! that every node serves its route without an extra hop. Older agents
//! keep working with one node and are never sent the list.
//!
//! A node with no session to a route's agent forwards its requests, once,
//! to one that has one, signed with the cluster secret; the node that
//! serves a request audits it, once. The nodes share one PostgreSQL
//! database (the test server of tests/src/postgres.rs).

use std::time::Duration;

use e2e::cluster::{agents_on, until_agents};
use e2e::{AgentProc, HttpsClient, RelayProc, TempDir, Upstream};
use protocol::{Control, FrameLimit, HelloReply, NODES_VERSION};
use tunnel::TunnelConnection;

async fn get(node: &RelayProc, token: &str) -> e2e::client::Answer {
    get_at(node, token, "x").await
}

async fn get_at(node: &RelayProc, token: &str, leaf: &str) -> e2e::client::Answer {
    HttpsClient::new(&node.ca(), false)
        .get(
            &format!("{}/echo/{leaf}", node.route_url("demo")),
            Some(token),
        )
        .await
}

/// The audit events of every node whose line holds `needle`.
fn audited(nodes: &[RelayProc], needle: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let text =
            std::fs::read_to_string(node.state.path().join("audit.jsonl")).unwrap_or_default();
        found.extend(
            text.lines()
                .filter(|l| l.contains(needle))
                .map(|l| (i, l.to_owned())),
        );
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_holds_a_session_to_every_node_and_each_serves_its_route() {
    let upstream = Upstream::start("u1").await;
    let (_state, nodes) = e2e::cluster::start_cluster(3).await;
    let agent_token = nodes[0].token("alice@example.com", false);
    let client = nodes[0].token("alice@example.com", true);
    // Dials the first node's address (the relay's public name); told the
    // others by it.
    let _agent = AgentProc::start(&nodes[0], &agent_token, "demo", &upstream.url(), "auto").await;
    for node in &nodes {
        until_agents(node, 1.0, Duration::from_secs(15)).await;
    }
    for (i, node) in nodes.iter().enumerate() {
        let answer = get_at(node, &client, &format!("direct-{i}")).await;
        assert_eq!(answer.status, 200, "node {}: {}", node.addr, answer.text());
        assert_eq!(answer.headers["x-upstream"], "u1");
    }
    // Each node served its own requests (its audit has them; no other's).
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..nodes.len() {
        let events = audited(&nodes, &format!("direct-{i}\""));
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].0, i, "served by another node: {events:?}");
    }
    // One agent: one session per node, never two on one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for node in &nodes {
        assert_eq!(agents_on(node).await, 1.0, "node {}", node.addr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_connections_bound_the_sessions_and_a_node_that_stops_is_left() {
    let upstream = Upstream::start("u1").await;
    let (_state, mut nodes) = e2e::cluster::start_cluster(3).await;
    let (_agent, client) = e2e::cluster::alice_agent(&nodes, &upstream.url(), 2).await;
    // The first node, and one other (the list's first other).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let held = agents_on(&nodes[1]).await + agents_on(&nodes[2]).await;
        if held == 1.0 {
            break;
        }
        assert!(held <= 1.0, "more sessions than --relay-connections 2");
        assert!(tokio::time::Instant::now() < deadline, "no second session");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = agents_on(&nodes[1]).await + agents_on(&nodes[2]).await;
    assert_eq!(held, 1.0, "more sessions than --relay-connections 2");
    let (with, without) = if agents_on(&nodes[1]).await == 1.0 {
        (1, 2)
    } else {
        (2, 1)
    };
    assert_eq!(get(&nodes[with], &client).await.status, 200);
    // No session there: forwarded (see forwarding_* for the audit).
    let answer = get(&nodes[without], &client).await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    // The node with the second session stops cleanly: it leaves the list,
    // and the agent takes the remaining node instead.
    let stopped = nodes.remove(with);
    stopped.proc.signal("TERM");
    let without = if without > with { without - 1 } else { without };
    until_agents(&nodes[without], 1.0, Duration::from_secs(20)).await;
    assert_eq!(get(&nodes[without], &client).await.status, 200);
}

/// Says hello as a version `version` agent to `node` and returns the control
/// messages the relay sends within `within` (pinging it meanwhile).
async fn control_messages(node: &RelayProc, version: u16, within: Duration) -> Vec<Control> {
    let token = node.token(&format!("v{version}@example.com"), false);
    let (_endpoint, quic) = crate::hostile::quic_connect(node).await;
    let conn = TunnelConnection::Quic(quic);
    let hello = crate::hostile::hello(version, &token, &format!("v{version}"));
    let (reply, mut send, mut recv) = crate::hostile::say_hello(&conn, &hello).await;
    let HelloReply::Welcome(welcome) = reply else {
        panic!("a version {version} hello was refused: {reply:?}");
    };
    assert_eq!(welcome.version, version);
    protocol::write_frame(
        "control",
        &mut send,
        &Control::Ping { nonce: 7 },
        FrameLimit::CONTROL,
    )
    .await
    .expect("ping");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(within, async {
        loop {
            // Each frame decodes as what the agent's version knows: a
            // version 5 agent's `Control` has no `Nodes`, so one would fail.
            let payload = match protocol::frame::read_payload(
                "control",
                &mut recv,
                FrameLimit::CONTROL,
            )
            .await
            {
                Ok(p) => p,
                Err(_) => return,
            };
            if version < NODES_VERSION {
                let old: OldControl = protocol::frame::decode_payload("control", &payload)
                    .unwrap_or_else(|e| {
                        panic!("a version {version} agent cannot decode a control message: {e}")
                    });
                got.push(match old {
                    OldControl::Ping { nonce } => Control::Ping { nonce },
                    OldControl::Pong { nonce } => Control::Pong { nonce },
                    OldControl::GoAway { .. } => return,
                });
            } else {
                got.push(protocol::frame::decode_payload("control", &payload).expect("control"));
            }
        }
    })
    .await;
    got
}

/// `Control` as agents before version 6 decode it.
#[derive(serde::Deserialize)]
enum OldControl {
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    #[allow(dead_code)]
    GoAway {
        reason: protocol::GoAwayReason,
        reconnect: bool,
        message: String,
    },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_6_agents_are_told_the_nodes_and_older_ones_never() {
    let (_state, nodes) = e2e::cluster::start_cluster(2).await;
    // Both nodes are live (each heartbeats within a second).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut want: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    want.sort();

    let got = control_messages(&nodes[1], NODES_VERSION, Duration::from_secs(3)).await;
    let lists: Vec<_> = got
        .iter()
        .filter_map(|c| match c {
            Control::Nodes { this, addresses } => Some((this.clone(), addresses.clone())),
            _ => None,
        })
        .collect();
    assert!(!lists.is_empty(), "no node list: {got:?}");
    let (this, mut addresses) = lists.last().cloned().expect("a list");
    assert_eq!(this, nodes[1].addr.to_string());
    addresses.sort();
    assert_eq!(addresses, want);
    assert!(got.contains(&Control::Pong { nonce: 7 }), "{got:?}");

    for version in [2, 5] {
        let got = control_messages(&nodes[1], version, Duration::from_secs(3)).await;
        assert_eq!(got, [Control::Pong { nonce: 7 }], "version {version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_address_needs_a_cluster_secret() {
    let state = TempDir::new("lonely");
    let mut relay = e2e::procs::Proc::spawn(
        "relay",
        &e2e::procs::bin("relay"),
        &[
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--self-signed".into(),
            "--admin-listen".into(),
            "off".into(),
            "--state-dir".into(),
            state.path().display().to_string(),
            "--node-address".into(),
            "127.0.0.1:4433".into(),
        ],
        &[],
    );
    let code = relay.wait_exit(Duration::from_secs(20)).await;
    assert_ne!(code, Some(0));
    assert!(
        relay.stderr_text().contains("--cluster-secret-file"),
        "{}",
        relay.stderr_text()
    );
}

/// A relay given the cluster's database but no cluster secret is no node:
/// it serves alone, and says at start that live nodes share its database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_on_a_clusters_database_without_its_secret_says_it_is_no_node() {
    let (_secret_dir, secret) = e2e::cluster::cluster_secret();
    let url = e2e::postgres::shared().create_database().await;
    let nodes = e2e::cluster::start_nodes(&url, 1, &["--cluster-secret-file", &secret]).await;
    let registered = tokio::time::Instant::now();
    while nodes[0].metric("drawbridge_cluster_live_nodes").await != Some(1.0) {
        assert!(
            registered.elapsed() < Duration::from_secs(10),
            "the node never saw itself live"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let name = nodes[0].url();
    let outsider = e2e::cluster::add_node(&nodes[0], &url, &["--public-url", &name]).await;
    assert!(
        outsider
            .proc
            .wait_stderr("this relay is not one of them", Duration::from_secs(10))
            .await,
        "{}",
        outsider.proc.stderr_text()
    );
    // It is no node: the cluster still has one.
    assert_eq!(
        nodes[0].metric("drawbridge_cluster_live_nodes").await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_agent_forwards_once_and_the_serving_node_audits_once() {
    let upstream = Upstream::start("u1").await;
    let (_secret, nodes) = e2e::cluster::start_cluster(3).await;
    let (_agent, client) = e2e::cluster::alice_agent(&nodes, &upstream.url(), 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(agents_on(&nodes[1]).await, 0.0, "--relay-connections 1");
    assert_eq!(agents_on(&nodes[2]).await, 0.0, "--relay-connections 1");
    let mut forwarded = 0;
    for round in 0..4 {
        for (i, node) in nodes.iter().enumerate() {
            let leaf = format!("once-{round}-{i}");
            let answer = get_at(node, &client, &leaf).await;
            assert_eq!(answer.status, 200, "node {i}: {}", answer.text());
            assert_eq!(answer.headers["x-upstream"], "u1");
            // The agent's upstream saw the path as the client sent it.
            assert!(answer.text().contains(&leaf), "{}", answer.text());
            if i > 0 {
                forwarded += 1;
            }
        }
    }
    // Every request audited once, by the node that served it (the one
    // that holds the agent), never by the one that forwarded it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for round in 0..4 {
        for i in 0..nodes.len() {
            let leaf = format!("once-{round}-{i}\"");
            let events = audited(&nodes, &leaf);
            assert_eq!(events.len(), 1, "{leaf}: {events:?}");
            assert_eq!(events[0].0, 0, "audited by the serving node: {events:?}");
        }
    }
    println!("forwarded {forwarded} requests, each audited once by the serving node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_missing_forwarding_signature_is_refused() {
    let upstream = Upstream::start("u1").await;
    let (_secret, nodes) = e2e::cluster::start_cluster(2).await;
    let agent_token = nodes[0].token("alice@example.com", false);
    let client = nodes[0].token("alice@example.com", true);
    let _agent = AgentProc::start(&nodes[0], &agent_token, "demo", &upstream.url(), "auto").await;
    until_agents(&nodes[1], 1.0, Duration::from_secs(15)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let forged = [
        // A signature by a secret that is not the cluster's.
        vec![
            (
                "drawbridge-forwarded",
                format!("t={now}; node=n1; sig={}", "ab".repeat(32)),
            ),
            ("drawbridge-forwarded-for", "192.0.2.7:4000".to_owned()),
        ],
        // Malformed.
        vec![
            ("drawbridge-forwarded", "yes".to_owned()),
            ("drawbridge-forwarded-for", "192.0.2.7:4000".to_owned()),
        ],
        // A client address without a signature.
        vec![("drawbridge-forwarded-for", "192.0.2.7:4000".to_owned())],
        // A signature without the client address.
        vec![(
            "drawbridge-forwarded",
            format!("t={now}; node=n1; sig={}", "ab".repeat(32)),
        )],
    ];
    for node in &nodes {
        for headers in &forged {
            let mut req = http::Request::builder()
                .method("GET")
                .uri(format!("{}/echo/forged", node.route_url("demo")))
                .header("authorization", format!("Bearer {client}"));
            for (name, value) in headers {
                req = req.header(*name, value);
            }
            let answer = HttpsClient::new(&node.ca(), false)
                .fetch(req.body(e2e::client::full_body("")).expect("request"))
                .await;
            assert_eq!(answer.status, 403, "{headers:?}: {}", answer.text());
            assert!(
                answer.text().contains("forwarding_refused"),
                "{}",
                answer.text()
            );
        }
        // Without them: served.
        assert_eq!(get(node, &client).await.status, 200);
    }
    assert!(audited(&nodes, "/echo/forged").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_holder_is_named_and_a_dead_one_is_an_offline_route() {
    let upstream = Upstream::start("u1").await;
    let (_secret, mut nodes) = e2e::cluster::start_cluster(2).await;
    let (_agent, client) = e2e::cluster::alice_agent(&nodes, &upstream.url(), 1).await;
    assert_eq!(get(&nodes[1], &client).await.status, 200);
    let holder = nodes[0].addr.to_string();
    nodes[0].proc.signal("KILL");
    // Until its heartbeat is stale, the dead node is still the holder: 502
    // naming it. Then the route is offline, as with no agent.
    let first = get(&nodes[1], &client).await;
    assert_eq!(first.status, 502, "{}", first.text());
    assert!(first.text().contains(&holder), "{}", first.text());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let answer = get(&nodes[1], &client).await;
        if answer.status == 503 {
            assert!(
                answer.text().contains("no agent is connected"),
                "{}",
                answer.text()
            );
            break;
        }
        assert_eq!(answer.status, 502, "{}", answer.text());
        assert!(tokio::time::Instant::now() < deadline, "still 502");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    nodes.remove(0);
}

/// POSTs a JSON-RPC message to `node`'s route `db` (with MCP session
/// `session`); the answer's status and session header.
async fn rpc(
    node: &RelayProc,
    token: &str,
    session: Option<&str>,
    body: &str,
) -> (u16, Option<String>, String) {
    let mut req = http::Request::builder()
        .method("POST")
        .uri(node.route_url("db"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let answer = HttpsClient::new(&node.ca(), false)
        .fetch(
            req.body(e2e::client::full_body(body.to_owned()))
                .expect("request"),
        )
        .await;
    let session = answer
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (answer.status.as_u16(), session, answer.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_sessions_keep_their_agent_on_every_node() {
    // Two agents (two instances) of one owner serve a stateful route; each
    // holds a session to both nodes, or (`--relay-connections 1`) one to
    // the first only. A session created through one node is served by its
    // instance through any node: never by the other replica (which does
    // not know it and would answer 404).
    for connections in ["4", "1"] {
        let dir = TempDir::new("affinity-nodes");
        let (_secret, nodes) = e2e::cluster::start_cluster(2).await;
        let agent_token = nodes[0].token("alice@example.com", false);
        let client = nodes[0].token("alice@example.com", true);
        let mut agents = Vec::new();
        for name in ["a", "b"] {
            let db = dir.path().join(format!("{name}.db")).display().to_string();
            let mut a = AgentProc::spawn_upstream(
                &nodes[0],
                &agent_token,
                "db",
                &["--sqlite", &db],
                "auto",
                &["--relay-connections", connections],
            );
            a.wait_live().await;
            agents.push(a);
        }
        until_agents(&nodes[0], 2.0, Duration::from_secs(15)).await;
        let on_second = if connections == "4" { 2.0 } else { 0.0 };
        until_agents(&nodes[1], on_second, Duration::from_secs(15)).await;
        let initialize = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"nodes-test","version":"1"}}}"#;
        let mut served = 0;
        for round in 0..6 {
            let first = &nodes[round % 2];
            let (status, session, text) = rpc(first, &client, None, initialize).await;
            assert_eq!(status, 200, "{text}");
            let session = session.expect("a stateful server names its session");
            for (i, node) in nodes.iter().enumerate() {
                for id in 0..3 {
                    let ping = format!(r#"{{"jsonrpc":"2.0","id":{},"method":"ping"}}"#, 10 + id);
                    let (status, _, text) = rpc(node, &client, Some(&session), &ping).await;
                    assert_eq!(
                        status, 200,
                        "--relay-connections {connections}: session of round {round} on node {i}: {text}"
                    );
                    served += 1;
                }
            }
        }
        println!("--relay-connections {connections}: {served} requests of 6 sessions over 2 nodes, each served by its instance");
    }
}

/// One request of the load: which node, when it was sent and answered
/// (since the start), and whether it was answered 200.
struct Sent {
    node: usize,
    at: Duration,
    ok: bool,
    what: String,
    /// The path's last segment, unique per request (`<caller>-<n>`): how
    /// its audit event is found, whichever node served it.
    mark: String,
}

/// 3 nodes, one agent (sessions to all), 64 callers spread over the nodes
/// for 20 s; node 2 gets `signal` at 5 s and starts again at 10 s.
async fn stop_one_node_under_load(signal: &str) {
    const CALLERS: usize = 64;
    const RUN: Duration = Duration::from_secs(20);
    let upstream = Upstream::start("u1").await;
    let (_secret, mut nodes) = e2e::cluster::start_cluster(3).await;
    let agent_token = nodes[0].token("alice@example.com", false);
    let client = nodes[0].token("alice@example.com", true);
    let _agent = AgentProc::start(&nodes[0], &agent_token, "demo", &upstream.url(), "auto").await;
    for node in &nodes {
        until_agents(node, 1.0, Duration::from_secs(15)).await;
    }
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}/echo/load", n.route_url("demo")))
        .collect();
    let ca = nodes[0].ca();
    // Warm: each node has read the token, the route and its grants once.
    for node in &nodes {
        for _ in 0..3 {
            assert_eq!(get(node, &client).await.status, 200);
        }
    }
    let start = tokio::time::Instant::now();
    let mut callers = Vec::new();
    for c in 0..CALLERS {
        let (url, node, client, ca) = (urls[c % 3].clone(), c % 3, client.clone(), ca.clone());
        callers.push(tokio::spawn(async move {
            let http = HttpsClient::new(&ca, false);
            let mut sent = Vec::new();
            while start.elapsed() < RUN {
                let at = start.elapsed();
                let mark = format!("{c}-{}", sent.len());
                let req = http::Request::builder()
                    .uri(format!("{url}/{mark}"))
                    .header("authorization", format!("Bearer {client}"))
                    .body(e2e::client::full_body(""))
                    .expect("request");
                let answer = tokio::time::timeout(Duration::from_secs(10), http.try_fetch(req))
                    .await
                    .unwrap_or_else(|_| Err("no answer within 10 s".into()));
                let (ok, what) = match answer {
                    Ok(a) if a.status == 200 => (true, String::new()),
                    Ok(a) => (false, format!("{}: {}", a.status, a.text())),
                    Err(e) => (false, e),
                };
                if !ok {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                sent.push(Sent {
                    node,
                    at,
                    ok,
                    what,
                    mark,
                });
            }
            sent
        }));
    }
    tokio::time::sleep_until(start + Duration::from_secs(5)).await;
    let stopped_at = start.elapsed();
    nodes[2].proc.signal(signal);
    nodes[2].proc.wait_exit(Duration::from_secs(15)).await;
    // What node 2 had written and what the cluster's table held of it then.
    let log2 = e2e::cluster_audit::log_id(&nodes[2]);
    let written_at_stop = e2e::cluster_audit::local_seqs(&nodes[2]).len();
    let shipped_at_stop = cluster_audit(&nodes[0])
        .iter()
        .filter(|e| e.node == log2)
        .count();
    tokio::time::sleep_until(start + Duration::from_secs(10)).await;
    let state = nodes[2].state.clone();
    let addr = nodes[2].addr.to_string();
    let extra = nodes[2].extra_args.clone();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let restarted = RelayProc::start_with(state, &addr, &extra).await;
    let ready_at = start.elapsed();
    nodes[2] = restarted;
    // The agent is back on it (its session, not a forward).
    let mut back_after = None;
    while start.elapsed() < ready_at + Duration::from_secs(10) {
        if agents_on(&nodes[2]).await == 1.0 {
            back_after = Some(start.elapsed() - ready_at);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut all = Vec::new();
    for c in callers {
        all.extend(c.await.expect("caller"));
    }
    let others: Vec<&Sent> = all.iter().filter(|s| s.node != 2).collect();
    let after: Vec<&Sent> = all
        .iter()
        .filter(|s| s.node == 2 && s.at >= ready_at)
        .collect();
    let before: Vec<&Sent> = all
        .iter()
        .filter(|s| s.node == 2 && s.at < stopped_at)
        .collect();
    let down: Vec<&Sent> = all
        .iter()
        .filter(|s| s.node == 2 && s.at >= stopped_at && s.at < ready_at)
        .collect();
    let failed = |v: &[&Sent]| v.iter().filter(|s| !s.ok).count();
    println!(
        "SIG{signal} node 2 at {stopped_at:?}, ready again at {ready_at:?}, agent back on it {back_after:?} after; \
         {} requests in {RUN:?} by {CALLERS} callers: other nodes {} sent / {} failed; \
         node 2 before the stop {} / {}; while down {} / {} (not counted); after restart {} / {}",
        all.len(),
        others.len(),
        failed(&others),
        before.len(),
        failed(&before),
        down.len(),
        failed(&down),
        after.len(),
        failed(&after),
    );
    let first_failure = |v: &[&Sent]| {
        v.iter()
            .find(|s| !s.ok)
            .map(|s| format!("at {:?}: {}", s.at, s.what))
    };
    for s in all.iter().filter(|s| !s.ok && s.node != 2) {
        println!("failed on node {} at {:?}: {}", s.node, s.at, s.what);
    }
    assert_eq!(failed(&others), 0, "{:?}", first_failure(&others));
    assert_eq!(failed(&after), 0, "{:?}", first_failure(&after));
    if signal == "TERM" {
        assert_eq!(failed(&before), 0, "{:?}", first_failure(&before));
    }
    let back = back_after.expect("the agent never came back to the restarted node");
    assert!(
        back <= Duration::from_secs(2),
        "the agent came back {back:?} after the node was ready"
    );
    audit_of_the_load(&nodes, &all, &log2, written_at_stop, shipped_at_stop).await;
}

/// One event of `relay audit --database-url --json`.
struct ClusterEvent {
    node: String,
    seq: u64,
    /// The request's mark (see [`Sent::mark`]), if it was one of the load.
    mark: Option<String>,
}

/// The cluster's audit table, through `relay audit --database-url --json`
/// (the node's own database URL).
fn cluster_audit(node: &RelayProc) -> Vec<ClusterEvent> {
    e2e::cluster_audit::table(node)
        .into_iter()
        .map(|e| ClusterEvent {
            mark: e.http.split_once("/load/").map(|(_, m)| m.to_owned()),
            node: e.node,
            seq: e.seq,
        })
        .collect()
}

/// Every answered request of the load has exactly one event in the
/// cluster's table once shipping has caught up, and each node's log is
/// there whole: every `seq` once, none missing (node 2's too, stopped
/// while it had events not yet shipped, and restarted).
async fn audit_of_the_load(
    nodes: &[RelayProc],
    all: &[Sent],
    log2: &str,
    written_at_stop: usize,
    shipped_at_stop: usize,
) {
    let logs: Vec<String> = nodes.iter().map(e2e::cluster_audit::log_id).collect();
    let caught_up_from = tokio::time::Instant::now();
    let (events, local) = loop {
        let local: Vec<Vec<u64>> = nodes.iter().map(e2e::cluster_audit::local_seqs).collect();
        let events = cluster_audit(&nodes[0]);
        let whole = logs
            .iter()
            .zip(&local)
            .all(|(log, seqs)| events.iter().filter(|e| &e.node == log).count() >= seqs.len());
        if whole || caught_up_from.elapsed() > Duration::from_secs(30) {
            break (events, local);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let caught_up = caught_up_from.elapsed();
    for (i, (log, seqs)) in logs.iter().zip(&local).enumerate() {
        let mut shipped: Vec<u64> = events
            .iter()
            .filter(|e| &e.node == log)
            .map(|e| e.seq)
            .collect();
        shipped.sort_unstable();
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, &want, "node {i}'s local log is one chain");
        assert_eq!(shipped, want, "node {i}'s log in the table: every seq once");
    }
    let mut per_mark = std::collections::HashMap::<&str, usize>::new();
    for e in &events {
        if let Some(m) = &e.mark {
            *per_mark.entry(m.as_str()).or_default() += 1;
        }
    }
    let answered: Vec<&Sent> = all.iter().filter(|s| s.ok).collect();
    let missing: Vec<&str> = answered
        .iter()
        .filter(|s| !per_mark.contains_key(s.mark.as_str()))
        .map(|s| s.mark.as_str())
        .collect();
    let twice: Vec<(&&str, &usize)> = per_mark.iter().filter(|(_, n)| **n > 1).collect();
    println!(
        "audit: {} events in the cluster's table ({} of node 2's log: {written_at_stop} written and \
         {shipped_at_stop} shipped when it stopped), caught up {caught_up:?} after the load; \
         {} answered requests, {} without an event, {} events twice",
        events.len(),
        events.iter().filter(|e| e.node == log2).count(),
        answered.len(),
        missing.len(),
        twice.len(),
    );
    assert!(
        missing.is_empty(),
        "answered requests without an audit event: {:?}",
        &missing[..missing.len().min(10)]
    );
    assert!(
        twice.is_empty(),
        "requests with several audit events: {twice:?}"
    );
    for log in &logs {
        assert!(
            events.iter().any(|e| &e.node == log),
            "events of every node"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_under_load_costs_the_other_nodes_nothing() {
    stop_one_node_under_load("KILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_stopped_under_load_costs_nothing() {
    stop_one_node_under_load("TERM").await;
}

/// The local ports of `pid`'s established TCP connections to `to` (from
/// /proc: the process's socket inodes, and the kernel's table of IPv4
/// connections).
fn connections_to(pid: u32, to: std::net::SocketAddr) -> Vec<u16> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the node's open files")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let std::net::SocketAddr::V4(to) = to else {
        panic!("the nodes listen on IPv4 loopback addresses: {to}");
    };
    let remote = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(to.ip().octets()),
        to.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local, remote, state (01: established), ..., inode
            let established = f.get(3) == Some(&"01");
            (established && f.get(2) == Some(&remote.as_str()) && inodes.contains(*f.get(9)?))
                .then(|| u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok())
                .flatten()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_requests_reuse_a_connection_and_a_restarted_holder_is_reached_again() {
    let upstream = Upstream::start("u1").await;
    let (_secret, mut nodes) = e2e::cluster::start_cluster(2).await;
    let (_agent, client) = e2e::cluster::alice_agent(&nodes, &upstream.url(), 1).await;
    assert_eq!(agents_on(&nodes[1]).await, 0.0, "--relay-connections 1");
    // Twenty requests one after the other through node 1, each forwarded
    // to node 0: all on one kept connection between the nodes.
    let mut ports = std::collections::BTreeSet::new();
    for i in 0..20 {
        let answer = get_at(&nodes[1], &client, &format!("kept-{i}")).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let open = connections_to(nodes[1].proc.pid, nodes[0].addr);
        assert!(
            !open.is_empty(),
            "request {i}: no kept connection to node 0"
        );
        ports.extend(open);
    }
    assert_eq!(
        ports.len(),
        1,
        "connections from node 1 to node 0: {ports:?}"
    );
    assert_eq!(
        audited(&nodes[1..], "kept-").len(),
        0,
        "forwarded, not served"
    );
    // Node 0 restarts (its kept connection is gone); once the agent is back
    // on it, node 1's next request reaches it: never a 502.
    nodes[0].proc.signal("TERM");
    nodes[0].proc.wait_exit(Duration::from_secs(15)).await;
    let state = nodes[0].state.clone();
    let addr = nodes[0].addr.to_string();
    let extra = nodes[0].extra_args.clone();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    nodes[0] = RelayProc::start_with(state, &addr, &extra).await;
    until_agents(&nodes[0], 1.0, Duration::from_secs(15)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let answer = get_at(&nodes[1], &client, "after-restart").await;
        assert_ne!(answer.status, 502, "{}", answer.text());
        if answer.status == 200 {
            break;
        }
        // Until node 0 has recorded the agent's new session: no agent.
        assert_eq!(answer.status, 503, "{}", answer.text());
        assert!(tokio::time::Instant::now() < deadline, "still 503");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open = connections_to(nodes[1].proc.pid, nodes[0].addr);
    assert_eq!(open.len(), 1, "one connection again: {open:?}");
}
