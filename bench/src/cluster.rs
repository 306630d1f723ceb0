//! Three relay nodes beside one: MCP `tools/call` to the built-in SQLite
//! server (`agent connect --sqlite`) through
//!
//! * one relay on SQLite (the default),
//! * one relay on PostgreSQL (`--database-url`),
//! * three nodes on one PostgreSQL database (with a cluster secret), the
//!   agent holding a session to each,
//! * the same three nodes with the agent on the first only
//!   (`--relay-connections 1`), so that the two others forward their
//!   requests, once, to it.
//!
//! Each load worker holds a connection to every node and sends its requests
//! to them in turn ([`client::load_spread`]). PostgreSQL is the tests'
//! throwaway server (tests/src/postgres.rs: `initdb` into a temporary
//! directory, on 127.0.0.1); without its binaries the scenario is skipped.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::client;
use crate::postgres::{self, TestServer};
use crate::record::{percentile, Record};
use crate::systems::{self, Relay, SQL_ROUTE};

/// The setups, as they are named in the results (`system`), in order.
pub const SETUPS: [&str; 4] = [
    "sqlite-1-node",
    "postgres-1-node",
    "postgres-3-nodes",
    "postgres-3-nodes-forwarding",
];
/// The setup whose requests to nodes without the agent are forwarded.
pub const FORWARDING: &str = "postgres-3-nodes-forwarding";
/// Its c=1 requests apart: to the node with the agent, and forwarded.
pub const PARTS: [&str; 2] = ["direct", "forwarded"];
/// Workers (requests in flight).
pub const LEVELS: [usize; 2] = [1, 64];

/// What the relay logs for each request it forwards.
const FORWARD_LOG: &str = "forwarding to the node that holds the route's agent";

/// What the scenario gave.
pub enum Outcome {
    Measured(Vec<Record>),
    /// Not run, and why (PostgreSQL is not installed).
    Skipped(String),
}

/// One setup.
struct Setup {
    name: &'static str,
    nodes: usize,
    postgres: bool,
    /// `agent connect --relay-connections` (default: 4, one per node).
    relay_connections: Option<u16>,
}

fn setup(name: &'static str) -> Setup {
    let (nodes, postgres, relay_connections) = match name {
        "sqlite-1-node" => (1, false, None),
        "postgres-1-node" => (1, true, None),
        "postgres-3-nodes" => (3, true, None),
        _ => (3, true, Some(1)),
    };
    Setup {
        name,
        nodes,
        postgres,
        relay_connections,
    }
}

/// Runs every setup on one PostgreSQL server (a database each), the agents
/// serving the SQLite file `db`.
pub async fn run(
    dir: &Path,
    db: &Path,
    warmup: usize,
    level_time: Duration,
) -> anyhow::Result<Outcome> {
    if let Err(why) = postgres::bin_dir() {
        return Ok(Outcome::Skipped(why));
    }
    std::fs::create_dir_all(dir)?;
    let server = tokio::task::spawn_blocking(TestServer::start)
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("start PostgreSQL")?;
    let mut records = Vec::new();
    for name in SETUPS {
        eprintln!("  -- {name}");
        match measure(&setup(name), &server, dir, db, warmup, level_time).await {
            Ok(rs) => records.extend(rs),
            Err(e) => eprintln!("!! cluster {name} not measured: {e:#}"),
        }
        // Let the processes go before the next setup starts.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Stops the server and removes its directory (waits for it).
    tokio::task::spawn_blocking(move || drop(server)).await?;
    Ok(Outcome::Measured(records))
}

async fn measure(
    setup: &Setup,
    server: &TestServer,
    dir: &Path,
    db: &Path,
    warmup: usize,
    level_time: Duration,
) -> anyhow::Result<Vec<Record>> {
    let dir = dir.join(setup.name);
    std::fs::create_dir_all(&dir)?;
    // The admin listener: which node holds the agent (metrics).
    let mut extra: Vec<String> = vec!["--admin-listen".into(), "127.0.0.1:0".into()];
    if setup.postgres {
        extra.extend(["--database-url".into(), server.create_database().await]);
    }
    if setup.nodes > 1 {
        let secret = dir.join("cluster.secret");
        let hex: String = (0..32).map(|i| format!("{:02x}", i * 7 + 3)).collect();
        std::fs::write(&secret, hex)?;
        extra.extend(["--cluster-secret-file".into(), secret.display().to_string()]);
    }
    let first = Relay::start(&dir.join("node-1"), "127.0.0.1:0", &extra).await?;
    // One name for the cluster, as behind one DNS name.
    let mut more = extra.clone();
    more.extend(["--public-url".into(), first.url()]);
    let mut nodes = vec![first];
    for i in 1..setup.nodes {
        let node = Relay::start(&dir.join(format!("node-{}", i + 1)), "127.0.0.1:0", &more).await?;
        nodes.push(node);
    }
    let agent_token = nodes[0].token(false)?;
    let client_token = nodes[0].token(true)?;
    let mut upstream = vec![
        "--sqlite".into(),
        db.display().to_string(),
        "--sqlite-max-calls-per-identity".into(),
        "1024".into(),
    ];
    if let Some(n) = setup.relay_connections {
        upstream.extend(["--relay-connections".into(), n.to_string()]);
    }
    // It dials the first node (the cluster's name) and is told the others.
    let _agent =
        systems::agent(&nodes[0], &agent_token, SQL_ROUTE, &upstream, "quic", &dir).await?;
    let want = setup.relay_connections.map_or(setup.nodes, usize::from);
    let held = sessions_settled(&nodes, want).await?;
    let targets = nodes
        .iter()
        .map(|n| n.target(&client_token))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for t in &targets {
        systems::wait_serving(t, Duration::from_secs(30)).await?;
    }
    let forwarded_before = forwarded(&nodes);
    let mut out = Vec::new();
    for c in LEVELS {
        let level = client::load_spread(&targets, c, warmup, level_time).await?;
        out.push(level.record(setup.name, "cluster", c));
        if c == 1 && setup.relay_connections.is_some() {
            out.extend(hop(setup.name, &held, &level.per_target_us));
        }
    }
    let sent: u64 = out
        .iter()
        .filter(|r| r.part.is_none())
        .filter_map(|r| r.runs)
        .sum();
    eprintln!(
        "  {} requests forwarded between nodes (relay logs; warm-up included), {sent} measured",
        forwarded(&nodes).saturating_sub(forwarded_before)
    );
    Ok(out)
}

/// The c=1 requests of the forwarding setup apart: those sent to a node that
/// holds the agent, and those the other nodes forwarded.
fn hop(system: &str, held: &[bool], per_node: &[Vec<f64>]) -> Vec<Record> {
    let mut direct = Vec::new();
    let mut forwarded = Vec::new();
    for (holds, lat) in held.iter().zip(per_node) {
        if *holds {
            direct.extend_from_slice(lat);
        } else {
            forwarded.extend_from_slice(lat);
        }
    }
    let mut out = Vec::new();
    for (part, mut lat) in PARTS.into_iter().zip([direct, forwarded]) {
        if lat.is_empty() {
            continue;
        }
        lat.sort_by(f64::total_cmp);
        let mut r = Record::new(system, "cluster");
        r.concurrency = Some(1);
        r.part = Some(part.to_owned());
        r.p50_us = Some(percentile(&lat, 0.5));
        r.p99_us = Some(percentile(&lat, 0.99));
        r.runs = Some(lat.len() as u64);
        eprintln!(
            "    {part:<9} p50 {:>7.0} µs  p99 {:>8.0} µs  ({} requests)",
            r.p50_us.unwrap_or(0.0),
            r.p99_us.unwrap_or(0.0),
            lat.len()
        );
        out.push(r);
    }
    out
}

/// Waits until the agent holds `want` sessions, one per node at most, and
/// they stay so for 2 s (a session more would arrive meanwhile); returns
/// which nodes hold one.
async fn sessions_settled(nodes: &[Relay], want: usize) -> anyhow::Result<Vec<bool>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut since: Option<Instant> = None;
    loop {
        let mut held = Vec::with_capacity(nodes.len());
        for node in nodes {
            held.push(agents_on(node).await?);
        }
        let ok = held.iter().all(|&n| n <= 1.0) && held.iter().sum::<f64>() == want as f64;
        match (ok, since) {
            (true, Some(t)) if t.elapsed() >= Duration::from_secs(2) => {
                return Ok(held.iter().map(|&n| n == 1.0).collect());
            }
            (true, None) => since = Some(Instant::now()),
            (true, Some(_)) => {}
            (false, _) => since = None,
        }
        if Instant::now() > deadline {
            bail!("the agent's sessions per node are {held:?}, not {want} in all, one per node at most");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The agent sessions a node holds (both transports), from its metrics.
async fn agents_on(node: &Relay) -> anyhow::Result<f64> {
    let admin = node.admin.context("the node has no admin listener")?;
    let text = metrics(admin).await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("drawbridge_agents_connected{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// `GET /metrics` on an admin listener (plain HTTP/1.1).
async fn metrics(admin: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(|| format!("connect to the admin listener {admin}"))?;
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw))
        .await
        .context("the admin listener did not answer")??;
    let raw = String::from_utf8_lossy(&raw);
    match raw.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => bail!(
            "GET /metrics on {admin}: {}",
            raw.lines().next().unwrap_or("")
        ),
    }
}

/// Requests the nodes logged as forwarded so far.
fn forwarded(nodes: &[Relay]) -> u64 {
    nodes
        .iter()
        .map(|n| {
            std::fs::read_to_string(&n.proc.log)
                .unwrap_or_default()
                .matches(FORWARD_LOG)
                .count() as u64
        })
        .sum()
}

/// `postgres --version` of the server the scenario runs, for the report.
pub fn postgres_version() -> String {
    let Ok(bin) = postgres::bin_dir() else {
        return "not installed (the cluster scenario is skipped)".into();
    };
    crate::procs::run(&bin.join("postgres").display().to_string(), &["--version"])
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
