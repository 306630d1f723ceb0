//! Agents and nodes: relays that share their state and a cluster secret are
//! nodes of one cluster; each tells its agents (protocol 6) the live nodes,
//! and an agent holds a session to each, up to `--relay-connections`, so
//! that every node serves its route without an extra hop. Older agents
//! keep working with one node and are never sent the list.
//!
//! The nodes here share one SQLite state dir (two processes on one file, as
//! the store allows); on PostgreSQL they share its database.

use std::sync::Arc;
use std::time::Duration;

use e2e::{AgentProc, HttpsClient, RelayProc, TempDir, Upstream};
use protocol::{Control, FrameLimit, HelloReply, NODES_VERSION};
use tunnel::TunnelConnection;

/// Starts `n` nodes on one state dir with one cluster secret.
async fn cluster(n: usize) -> (Arc<TempDir>, Vec<RelayProc>) {
    let state = Arc::new(TempDir::new("cluster"));
    let secret = state.path().join("cluster.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").expect("write the secret");
    let secret = secret.display().to_string();
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(
            RelayProc::start_with(
                state.clone(),
                "127.0.0.1:0",
                &["--cluster-secret-file", &secret],
            )
            .await,
        );
    }
    (state, nodes)
}

/// The agents a node holds sessions with (both transports).
async fn agents_on(node: &RelayProc) -> f64 {
    let mut n = 0.0;
    for t in ["quic", "tcp"] {
        n += node
            .metric(&format!("drawbridge_agents_connected{{transport=\"{t}\"}}"))
            .await
            .unwrap_or(0.0);
    }
    n
}

async fn until_agents(node: &RelayProc, want: f64, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let n = agents_on(node).await;
        if n == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {} holds {n} agent sessions, not {want}, after {within:?}",
            node.addr
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(node: &RelayProc, token: &str) -> e2e::client::Answer {
    HttpsClient::new(&node.ca(), false)
        .get(&format!("{}/echo/x", node.route_url("demo")), Some(token))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_holds_a_session_to_every_node_and_each_serves_its_route() {
    let upstream = Upstream::start("u1").await;
    let (_state, nodes) = cluster(3).await;
    let agent_token = nodes[0].token("alice@example.com", false);
    let client = nodes[0].token("alice@example.com", true);
    // Dials the first node's address (the relay's public name); told the
    // others by it.
    let _agent = AgentProc::start(&nodes[0], &agent_token, "demo", &upstream.url(), "auto").await;
    for node in &nodes {
        until_agents(node, 1.0, Duration::from_secs(15)).await;
    }
    for node in &nodes {
        let answer = get(node, &client).await;
        assert_eq!(answer.status, 200, "node {}: {}", node.addr, answer.text());
        assert_eq!(answer.headers["x-upstream"], "u1");
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
    let (_state, mut nodes) = cluster(3).await;
    let agent_token = nodes[0].token("alice@example.com", false);
    let client = nodes[0].token("alice@example.com", true);
    let mut agent = AgentProc::spawn(
        &nodes[0],
        &agent_token,
        "demo",
        &upstream.url(),
        "auto",
        &["--relay-connections", "2"],
    );
    agent.wait_live().await;
    until_agents(&nodes[0], 1.0, Duration::from_secs(15)).await;
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
    // No session, and (without forwarding) the answer of an offline route.
    let answer = get(&nodes[without], &client).await;
    assert_eq!(answer.status, 503, "{}", answer.text());

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
    let (_state, nodes) = cluster(2).await;
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
