//! Many agents on one relay: a lightweight agent per connection, in this
//! process, running the agent library's real session (QUIC dial, `Hello`
//! with an agent token, `Welcome`, then pings on the control stream), each
//! serving its own route. Measures the relay's memory per connected agent
//! and how long all of them take to connect.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tunnel::quic::QuicSettings;
use tunnel::TunnelConnection;

use agent::session::{self, Identity, Serving, SessionConfig};
use agent::Upstream;
use agent::{Gate, OwnerPolicy, Reporter, RequestLine};

use crate::record::{percentile, Record};
use crate::systems::Relay;

/// Dials in flight at once (a crowd of laptops, not a single burst).
const PARALLEL_DIALS: usize = 64;

/// Connects `agents` agents to a fresh relay; one `scale` record.
pub async fn run(dir: &std::path::Path, upstream: &str, agents: usize) -> anyhow::Result<Record> {
    let relay = Relay::start(&dir.join("relay"), "127.0.0.1:0", &[]).await?;
    let token = relay.token(false)?;
    // Let the relay settle before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = relay.proc.rss_kib();

    let tls = tunnel::tls::client_config(Some(&relay.ca()), &[protocol::ALPN])?;
    let settings = QuicSettings {
        max_incoming_streams: tunnel::mux::MAX_STREAMS as u32,
        keep_alive: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(20),
        initial_rtt: Duration::from_millis(100),
    };
    // One UDP socket for every connection: quinn multiplexes them.
    let (endpoint, _) = tunnel::quic::client_endpoint(relay.addr, tls, &settings)?;
    let upstream = Arc::new(Upstream::http(upstream)?);
    let kind = upstream.kind();
    let serving = Arc::new(Serving {
        gate: Gate::new(
            &OwnerPolicy::from_flags(&[], None, false)?,
            kind,
            4 * 1024 * 1024,
        ),
        upstream,
        reporter: Arc::new(Silent),
        inspector: None,
    });
    let stop = CancellationToken::new();
    let gate = Arc::new(Semaphore::new(PARALLEL_DIALS));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    for i in 0..agents {
        let (endpoint, serving, stop, gate, tx, token) = (
            endpoint.clone(),
            serving.clone(),
            stop.clone(),
            gate.clone(),
            tx.clone(),
            token.clone(),
        );
        let addr = relay.addr;
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let t = Instant::now();
            let connected = async {
                let conn = endpoint.connect(addr, &addr.ip().to_string())?.await?;
                let identity = Identity {
                    token,
                    instance_id: instance_id(i),
                    routes: vec![format!("scale-{i}")],
                    kind,
                    policy: None,
                    accept_tool_changes: false,
                };
                match session::handshake(TunnelConnection::Quic(conn), &identity).await {
                    Ok(s) => anyhow::Ok(s),
                    Err(end) => bail!("handshake: {end:?}"),
                }
            }
            .await;
            drop(permit);
            match connected {
                Ok(established) => {
                    let _ = tx.send(Ok(t.elapsed()));
                    let config = SessionConfig {
                        drain_timeout: Duration::from_secs(1),
                        quic_retry: None,
                        nodes: None,
                    };
                    session::serve(established, serving, stop, &config, None).await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    }
    drop(tx);
    let mut times = Vec::with_capacity(agents);
    let mut failures = 0usize;
    let mut last_error = None;
    while times.len() + failures < agents {
        match tokio::time::timeout(Duration::from_secs(120), rx.recv()).await {
            Ok(Some(Ok(d))) => times.push(d.as_secs_f64() * 1e6),
            Ok(Some(Err(e))) => {
                failures += 1;
                last_error = Some(e);
            }
            Ok(None) => break,
            Err(_) => bail!("agents stopped connecting ({} of {agents})", times.len()),
        }
    }
    let all_connected = started.elapsed();
    if failures > 0 {
        stop.cancel();
        let e = last_error.map(|e| e.to_string()).unwrap_or_default();
        bail!("{failures} of {agents} agents failed to connect; last: {e}");
    }
    // Let the relay finish its bookkeeping and a keep-alive round pass.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = relay.proc.rss_kib();
    stop.cancel();
    endpoint.close(quinn::VarInt::from_u32(0), b"bench done");
    times.sort_by(f64::total_cmp);
    let mut r = Record::new("drawbridge-quic", "scale");
    r.concurrency = Some(agents as u64);
    r.rss_kib = Some(after.saturating_sub(before) as f64 / agents as f64);
    r.p50_us = Some(percentile(&times, 0.5));
    r.p99_us = Some(percentile(&times, 0.99));
    r.rps = Some(agents as f64 / all_connected.as_secs_f64());
    r.runs = Some(1);
    eprintln!(
        "  {agents} agents in {:.2}s; relay RSS {before} KiB -> {after} KiB",
        all_connected.as_secs_f64()
    );
    Ok(r)
}

/// A distinct instance id per simulated agent.
fn instance_id(i: usize) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(i as u64).to_le_bytes());
    id[8..].copy_from_slice(&std::process::id().to_le_bytes().repeat(2));
    id
}

/// The simulated agents report nothing.
struct Silent;

impl Reporter for Silent {
    fn live(&self, _route: &str, _url: &str, _transport: tunnel::Transport) {}
    fn reconnecting(&self, _reason: &str, _delay: Duration) {}
    fn request(&self, _line: &RequestLine) {}
}
