//! The tunnel hop alone: the round trip of one exchange relay → agent →
//! relay over Drawbridge's tunnel, beside a bare stream round trip of the
//! transports under it, between the same two processes in one run.
//!
//! This process plays the relay: it listens like `relay serve` (the tunnel
//! crate's QUIC endpoint and TLS+yamux on TCP, the relay's transport
//! settings, a certificate from the relay's local CA) and answers the
//! agent's hello. The far side is this program again (`bench --tunnel-peer`,
//! [`crate::tunnel_peer`]): it dials out like an agent, and serves
//!
//! * `quinn`: a bare quinn bidirectional stream: 128 bytes and FIN there,
//!   the same 128 bytes and FIN back (a task per stream on the far side);
//! * `tls-yamux`: the same over a yamux stream on TLS over TCP (yamux
//!   progresses only while its connection is polled, so both sides run the
//!   tunnel crate's yamux driver task, `tunnel::mux`);
//! * `drawbridge-quic`, `drawbridge-tcp`: one exchange through the code the
//!   relay and the agent run for every request: here `relay::forward::open`
//!   and `relay::forward::exchange` (head framing, the stream, the response
//!   head, the response body read to its end); there `agent::run`, the
//!   agent's own session (a task per stream, the exchange head read, the
//!   gate's decision with the owner's policy, the request handed to the
//!   upstream, the answer framed back, the request line printed). The
//!   upstream answers at once: a stdio route's GET without
//!   `Accept: text/event-stream` is answered 406 by the agent itself, before
//!   any child process is started, so no local server is timed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use http_body_util::BodyExt;
use protocol::{
    AcceptedRoute, BodyKind, Control, ExchangeHead, FrameLimit, Header, Hello, HelloReply,
    Identity, IdentityKind, Welcome, PROTOCOL_VERSION,
};
use relay::forward::{self, Upload};
use relay::{AgentSession, Metrics};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::compat::TokioAsyncReadCompatExt;
use tunnel::mux::{MuxConnection, Side};
use tunnel::quic::QuicSettings;
use tunnel::{ControlReader, TunnelConnection};

use crate::procs::Proc;
use crate::record::{percentile, Record};

/// The systems of the `tunnel` scenario, as they are named in the results.
/// The order matters: the bare stream of a transport, then Drawbridge's hop
/// over it, alternately QUIC and TCP.
pub const HOPS: [&str; 4] = ["quinn", "tls-yamux", "drawbridge-quic", "drawbridge-tcp"];
/// Streams in flight at once.
pub const LEVELS: [usize; 2] = [1, 16];
/// What the bare streams carry each way.
pub const ECHO_BYTES: usize = 128;
/// The owner of the far side's route (its requests come from the owner).
const OWNER: &str = "bench@example.com";
/// The far side's route.
pub const ROUTE: &str = "hop";
/// The status the far side's agent answers each exchange with.
const ANSWER: http::StatusCode = http::StatusCode::NOT_ACCEPTABLE;
const WAIT: Duration = Duration::from_secs(20);
/// The relay's keep-alive interval (`relay serve` default).
const KEEPALIVE: Duration = Duration::from_secs(5);

/// Where the far side dials, written for it as JSON.
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerSpec {
    /// The CA that signed this side's certificate.
    pub ca: PathBuf,
    pub quinn: SocketAddr,
    pub tls_yamux: SocketAddr,
    pub drawbridge_quic: SocketAddr,
    pub drawbridge_tcp: SocketAddr,
}

/// One connection to the far side, ready for round trips.
enum Hop {
    Quinn(quinn::Connection),
    Yamux(Arc<MuxConnection>),
    Exchange {
        agent: Arc<AgentSession>,
        metrics: Arc<Metrics>,
        ids: AtomicU64,
    },
}

impl Hop {
    async fn round_trip(&self) -> anyhow::Result<()> {
        match self {
            Hop::Quinn(conn) => {
                let (mut send, mut recv) = conn.open_bi().await?;
                send.write_all(&[7u8; ECHO_BYTES]).await?;
                send.finish()?;
                let back = recv.read_to_end(ECHO_BYTES).await?;
                ensure!(back.len() == ECHO_BYTES, "echo of {} bytes", back.len());
            }
            Hop::Yamux(conn) => {
                use futures::io::{AsyncReadExt, AsyncWriteExt};
                let mut stream = conn.open().await?;
                stream.write_all(&[7u8; ECHO_BYTES]).await?;
                stream.close().await?;
                let mut back = Vec::with_capacity(ECHO_BYTES);
                stream.read_to_end(&mut back).await?;
                ensure!(back.len() == ECHO_BYTES, "echo of {} bytes", back.len());
            }
            Hop::Exchange {
                agent,
                metrics,
                ids,
            } => {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let opened = forward::open(agent, false).await?;
                let response =
                    forward::exchange(opened, head(id), Upload::Whole(Bytes::new()), WAIT, metrics)
                        .await?;
                ensure!(
                    response.status() == ANSWER,
                    "the agent answered {}, not {ANSWER}",
                    response.status()
                );
                let body = response.into_body().collect().await?.to_bytes();
                ensure!(!body.is_empty(), "an answer without its body");
            }
        }
        Ok(())
    }
}

/// An exchange as the relay's gateway writes one for a client's GET: the
/// owner's client token, a few headers, no body.
fn head(id: u64) -> ExchangeHead {
    let header = |name: &str, value: &str| Header {
        name: name.into(),
        value: value.as_bytes().to_vec(),
    };
    ExchangeHead {
        route: ROUTE.into(),
        method: "GET".into(),
        path: "/".into(),
        headers: vec![
            header("user-agent", "drawbridge-bench"),
            header("mcp-protocol-version", "2025-06-18"),
        ],
        identity: Identity {
            subject: OWNER.into(),
            kind: IdentityKind::ClientToken,
            credential_name: "bench".into(),
            groups: Vec::new(),
        },
        request_id: format!("{id:016x}"),
        session: None,
        body: BodyKind::Empty,
        grants: Vec::new(),
    }
}

/// Runs the scenario: one record per system of `only` (of [`HOPS`]) and level.
pub async fn run(
    dir: &Path,
    only: &[&str],
    warmup: usize,
    level_time: Duration,
) -> anyhow::Result<Vec<Record>> {
    std::fs::create_dir_all(dir)?;
    let cert = relay::certs::self_signed(dir, &[])?;
    let tls = tunnel::tls::server_config(cert.chain, cert.key, &[protocol::ALPN])?;
    let quic_endpoint = || {
        let (socket, _) = tunnel::udp::bind("127.0.0.1:0".parse()?)?;
        // As `relay serve` sets up its QUIC tunnel endpoint.
        let settings = QuicSettings {
            max_incoming_streams: 1,
            keep_alive: KEEPALIVE,
            idle_timeout: KEEPALIVE * 4,
            initial_rtt: Duration::from_millis(333),
        };
        anyhow::Ok(tunnel::quic::server_endpoint(
            socket,
            tls.clone(),
            &settings,
        )?)
    };
    let quinn_ep = quic_endpoint()?;
    let tunnel_ep = quic_endpoint()?;
    let yamux_tcp = TcpListener::bind("127.0.0.1:0").await?;
    let tunnel_tcp = TcpListener::bind("127.0.0.1:0").await?;
    let spec = PeerSpec {
        ca: relay::certs::ca_path(dir),
        quinn: quinn_ep.local_addr()?,
        tls_yamux: yamux_tcp.local_addr()?,
        drawbridge_quic: tunnel_ep.local_addr()?,
        drawbridge_tcp: tunnel_tcp.local_addr()?,
    };
    let spec_path = dir.join("peer.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)?;
    let exe = std::env::current_exe().context("this program's path")?;
    let peer = Proc::spawn(
        "tunnel-peer",
        &exe,
        &["--tunnel-peer".into(), spec_path.display().to_string()],
        &[],
        dir,
    )?;

    let acceptor = TlsAcceptor::from(Arc::new(tls.clone()));
    let connected = async {
        tokio::try_join!(
            async {
                let incoming = quinn_ep.accept().await.context("quinn endpoint closed")?;
                anyhow::Ok(Hop::Quinn(incoming.await?))
            },
            async { anyhow::Ok(Hop::Yamux(accept_mux(&yamux_tcp, &acceptor).await?.0)) },
            async {
                let incoming = tunnel_ep.accept().await.context("tunnel endpoint closed")?;
                let conn = TunnelConnection::Quic(incoming.await?);
                welcome(conn).await
            },
            async {
                let (conn, remote) = accept_mux(&tunnel_tcp, &acceptor).await?;
                welcome(TunnelConnection::Mux { conn, remote }).await
            },
        )
    };
    let (quinn_hop, yamux_hop, quic_hop, tcp_hop) =
        match tokio::time::timeout(WAIT, connected).await {
            Ok(Ok(hops)) => hops,
            Ok(Err(e)) => bail!("{e:#}; see {}", peer.log.display()),
            Err(_) => bail!(
                "the far side did not connect within {WAIT:?}; see {}:\n{}",
                peer.log.display(),
                crate::procs::tail(&peer.log)
            ),
        };
    let hops = [
        (HOPS[0], Arc::new(quinn_hop)),
        (HOPS[1], Arc::new(yamux_hop)),
        (HOPS[2], Arc::new(quic_hop)),
        (HOPS[3], Arc::new(tcp_hop)),
    ];
    let mut records = Vec::new();
    for c in LEVELS {
        for (name, hop) in hops.iter().filter(|(name, _)| only.contains(name)) {
            let level = measure(hop.clone(), c, warmup, level_time)
                .await
                .with_context(|| format!("{name} at {c} streams; see {}", peer.log.display()))?;
            let mut r = Record::new(name, "tunnel");
            r.concurrency = Some(c as u64);
            r.p50_us = Some(percentile(&level.latencies_us, 0.5));
            r.p99_us = Some(percentile(&level.latencies_us, 0.99));
            r.rps = Some(level.rps);
            r.runs = Some(level.latencies_us.len() as u64);
            eprintln!(
                "  {name:<16} c={c:<3} p50 {:>6.0} µs  p99 {:>6.0} µs  {:>7.0} round trips/s",
                r.p50_us.unwrap_or(0.0),
                r.p99_us.unwrap_or(0.0),
                level.rps,
            );
            records.push(r);
        }
    }
    drop(peer);
    quinn_ep.close(quinn::VarInt::from_u32(0), b"done");
    tunnel_ep.close(quinn::VarInt::from_u32(0), b"done");
    Ok(records)
}

/// Accepts one TLS connection on `listener` and starts yamux on it, as the
/// relay's listener does for a tunnel.
async fn accept_mux(
    listener: &TcpListener,
    acceptor: &TlsAcceptor,
) -> anyhow::Result<(Arc<MuxConnection>, SocketAddr)> {
    let (tcp, remote) = listener.accept().await?;
    tcp.set_nodelay(true)?;
    let tls = acceptor.accept(tcp).await?;
    Ok((MuxConnection::start(tls.compat(), Side::Server), remote))
}

/// The relay's side of the handshake: the hello read, a welcome for its
/// route, the session the relay would register, and the control stream
/// answered (pings) for as long as the connection lasts.
async fn welcome(conn: TunnelConnection) -> anyhow::Result<Hop> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    let hello: Hello = protocol::read_frame("hello", &mut recv, FrameLimit::CONTROL).await?;
    let version = hello.version.min(PROTOCOL_VERSION);
    let routes = hello
        .routes
        .iter()
        .map(|r| AcceptedRoute {
            name: r.name.clone(),
            public_url: format!("https://127.0.0.1/mcp/{}", r.name),
        })
        .collect();
    let reply = HelloReply::Welcome(Welcome {
        version,
        relay_version: env!("CARGO_PKG_VERSION").to_owned(),
        owner: OWNER.into(),
        session_id: 1,
        routes,
        keepalive_interval_ms: KEEPALIVE.as_millis() as u32,
    });
    protocol::write_frame("welcome", &mut send, &reply, FrameLimit::CONTROL).await?;
    let agent = Arc::new(AgentSession::new(
        1,
        OWNER.into(),
        "bench".into(),
        hello.instance_id,
        version,
        HashMap::new(),
        conn,
    ));
    let mut control = ControlReader::spawn(recv);
    tokio::spawn(async move {
        while let Ok(frame) = control.next().await {
            if let Control::Ping { nonce } = frame {
                let pong = Control::Pong { nonce };
                if protocol::write_frame("control", &mut send, &pong, FrameLimit::CONTROL)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    Ok(Hop::Exchange {
        agent,
        metrics: Arc::new(Metrics::new()),
        ids: AtomicU64::new(0),
    })
}

/// Round trips at one level.
struct Level {
    /// Sorted.
    latencies_us: Vec<f64>,
    rps: f64,
}

/// `concurrency` workers, each a task doing one round trip after another:
/// `warmup` each untimed, then for `time`.
async fn measure(
    hop: Arc<Hop>,
    concurrency: usize,
    warmup: usize,
    time: Duration,
) -> anyhow::Result<Level> {
    let mut warming = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let hop = hop.clone();
        warming.push(tokio::spawn(async move {
            for _ in 0..warmup {
                hop.round_trip().await?;
            }
            anyhow::Ok(())
        }));
    }
    for w in warming {
        w.await??;
    }
    let started = Instant::now();
    let deadline = started + time;
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let hop = hop.clone();
        workers.push(tokio::spawn(async move {
            let mut times = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                hop.round_trip().await?;
                times.push(t.elapsed().as_nanos() as f64 / 1000.0);
            }
            anyhow::Ok(times)
        }));
    }
    let mut latencies_us = Vec::new();
    for w in workers {
        latencies_us.extend(w.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies_us.sort_by(f64::total_cmp);
    Ok(Level {
        rps: latencies_us.len() as f64 / elapsed,
        latencies_us,
    })
}
