//! Connection churn does not grow the relay's memory (issue 7): 10,000
//! agent connect + handshake + disconnect cycles, alternating QUIC and TLS
//! over TCP, 16 at a time; the relay's resident memory after is within a
//! small bound of before (measured after a warm-up, so allocator pools and
//! lazily built state are already there).

use std::sync::Arc;
use std::time::Duration;

use agent::session::{self, Identity};
use agent::Dialer;
use e2e::{rss_kib, RelayProc};
use protocol::UpstreamKind;
use tokio::sync::Semaphore;
use tunnel::quic::QuicSettings;
use tunnel::TunnelConnection;

const CYCLES: usize = 10_000;
const WARM_UP: usize = 500;
const PARALLEL: usize = 16;
/// Growth allowed over the run: allocator fragmentation, not per-session
/// state (a leak of even 1 KiB per cycle would be 10 MiB).
const BOUND_KIB: u64 = 8 * 1024;

struct Churn {
    relay_addr: std::net::SocketAddr,
    quic: quinn::Endpoint,
    tcp: Dialer,
    token: String,
}

impl Churn {
    async fn cycle(&self, i: usize) -> Result<(), String> {
        let conn = if i.is_multiple_of(2) {
            let connecting = self
                .quic
                .connect(self.relay_addr, "127.0.0.1")
                .map_err(|e| e.to_string())?;
            TunnelConnection::Quic(connecting.await.map_err(|e| e.to_string())?)
        } else {
            self.tcp
                .dial_tcp(self.relay_addr)
                .await
                .map_err(|e| e.to_string())?
        };
        let mut instance_id = [0u8; 16];
        instance_id[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let identity = Identity {
            token: self.token.clone(),
            instance_id,
            routes: vec![format!("churn-{}", i % 16)],
            kind: UpstreamKind::PlainHttp,
            policy: None,
            accept_tool_changes: false,
        };
        let established = session::handshake(conn, &identity)
            .await
            .map_err(|e| format!("handshake: {e:?}"))?;
        established.conn.close("churn cycle done");
        Ok(())
    }
}

async fn run(churn: &Arc<Churn>, from: usize, to: usize) {
    let gate = Arc::new(Semaphore::new(PARALLEL));
    let mut tasks = Vec::new();
    for i in from..to {
        let permit = gate.clone().acquire_owned().await.expect("semaphore");
        let churn = churn.clone();
        tasks.push(tokio::spawn(async move {
            let r = churn.cycle(i).await;
            drop(permit);
            r
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.expect("cycle task") {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cycles failed; first: {}",
        failures.len(),
        to - from,
        failures[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_agent_connections_do_not_grow_the_relays_memory() {
    let relay = RelayProc::start(&["--max-connections-per-ip", "0"]).await;
    let token = relay.token("alice@example.com", false);
    let tls = tunnel::tls::client_config(Some(&relay.ca()), &[protocol::ALPN]).expect("tls");
    let settings = QuicSettings {
        max_incoming_streams: tunnel::mux::MAX_STREAMS as u32,
        keep_alive: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(20),
        initial_rtt: Duration::from_millis(100),
    };
    let (quic, _) = tunnel::quic::client_endpoint(relay.addr, tls, &settings).expect("endpoint");
    let url = url::Url::parse(&relay.url()).expect("url");
    let tcp = Dialer::new(&url, Some(&relay.ca())).expect("dialer");
    let churn = Arc::new(Churn {
        relay_addr: relay.addr,
        quic,
        tcp,
        token,
    });

    run(&churn, 0, WARM_UP).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (before, _) = rss_kib(relay.proc.pid);
    run(&churn, WARM_UP, WARM_UP + CYCLES).await;
    // Let the relay notice the last closes and drop their sessions.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (after, peak) = rss_kib(relay.proc.pid);
    println!(
        "churn: {CYCLES} connect/disconnect cycles (QUIC and TCP alternating, {PARALLEL} at a \
         time): relay RSS {before} KiB before, {after} KiB after ({:+} KiB), peak {peak} KiB",
        after as i64 - before as i64
    );
    assert!(
        after <= before + BOUND_KIB,
        "relay RSS grew from {before} KiB to {after} KiB over {CYCLES} cycles"
    );
    churn.quic.close(0u32.into(), b"done");
}
