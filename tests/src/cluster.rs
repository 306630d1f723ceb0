//! Relay nodes on one PostgreSQL database ([`crate::postgres`]): each node
//! its own state dir (audit log, pid file) and port. They share the
//! self-signed CA the first node stored in the database (each writes its
//! certificate to its own `ca.pem`), so that one client and one agent trust
//! them all.

use std::sync::Arc;
use std::time::Duration;

use crate::{AgentProc, RelayProc, TempDir};

/// A cluster secret, in a file of the returned directory (which must live
/// as long as the nodes that read it); and the file's path.
pub fn cluster_secret() -> (TempDir, String) {
    let dir = TempDir::new("cluster");
    let secret = dir.path().join("cluster.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef")
        .unwrap_or_else(|e| panic!("write the cluster secret: {e}"));
    let path = secret.display().to_string();
    (dir, path)
}

/// Starts `n` nodes of one cluster (one cluster secret, kept in the
/// returned directory) on a fresh database of the shared PostgreSQL server.
pub async fn start_cluster(n: usize) -> (TempDir, Vec<RelayProc>) {
    let (dir, secret) = cluster_secret();
    let url = crate::postgres::shared().create_database().await;
    let nodes = start_nodes(&url, n, &["--cluster-secret-file", &secret]).await;
    (dir, nodes)
}

/// Starts `n` relay nodes on the database at `url`, with `extra` flags each.
/// They have one name, as a cluster behind one DNS name does: the others'
/// `--public-url` is the first's URL, so that the OAuth issuer and the
/// route URLs (the audience of access tokens) are the same on every node.
pub async fn start_nodes(url: &str, n: usize, extra: &[&str]) -> Vec<RelayProc> {
    let mut args = vec!["--database-url", url];
    args.extend_from_slice(extra);
    let first = RelayProc::start(&args).await;
    let name = first.url();
    let mut more = vec!["--public-url", name.as_str()];
    more.extend_from_slice(extra);
    let mut nodes = vec![first];
    for _ in 1..n {
        let node = add_node(&nodes[0], url, &more).await;
        nodes.push(node);
    }
    nodes
}

/// Starts one more node on the database at `url` (the same database as
/// `first`'s, perhaps by another way): it serves a certificate of the CA in
/// the database, `first`'s.
pub async fn add_node(first: &RelayProc, url: &str, extra: &[&str]) -> RelayProc {
    let mut args = vec!["--database-url", url];
    args.extend_from_slice(extra);
    let state = Arc::new(TempDir::new("relay"));
    let node = RelayProc::start_with(state, "127.0.0.1:0", &args).await;
    let ca = |p: &RelayProc| std::fs::read(&p.ca).unwrap_or_else(|e| panic!("read ca.pem: {e}"));
    assert_eq!(
        ca(&node),
        ca(first),
        "every node trusts the CA in the database"
    );
    node
}

/// The agent sessions `node` holds (both transports), from its metrics.
pub async fn agents_on(node: &RelayProc) -> f64 {
    let mut n = 0.0;
    for t in ["quic", "tcp"] {
        n += node
            .metric(&format!("drawbridge_agents_connected{{transport=\"{t}\"}}"))
            .await
            .unwrap_or(0.0);
    }
    n
}

/// Waits (at most `within`) until `node` holds `want` agent sessions.
pub async fn until_agents(node: &RelayProc, want: f64, within: Duration) {
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

/// alice's agent for route `demo`, served by the HTTP server at `upstream`,
/// with sessions to at most `relay_connections` nodes, the first node's
/// first (with 1, the other nodes forward its requests to that one), once
/// that node holds it; and alice's client token.
pub async fn alice_agent(
    nodes: &[RelayProc],
    upstream: &str,
    relay_connections: usize,
) -> (AgentProc, String) {
    let agent_token = nodes[0].token("alice@example.com", false);
    let client = nodes[0].token("alice@example.com", true);
    let connections = relay_connections.to_string();
    let mut agent = AgentProc::spawn(
        &nodes[0],
        &agent_token,
        "demo",
        upstream,
        "auto",
        &["--relay-connections", &connections],
    );
    agent.wait_live().await;
    until_agents(&nodes[0], 1.0, Duration::from_secs(15)).await;
    (agent, client)
}
