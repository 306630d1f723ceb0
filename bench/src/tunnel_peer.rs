//! The far side of the `tunnel` scenario (`bench --tunnel-peer SPEC`, a
//! process of its own): it dials the measuring side ([`crate::tunnel_hop`])
//! as an agent dials a relay, four times: a bare quinn connection and a bare
//! TLS+yamux one, each echoing every stream opened to it, and two agents
//! (`agent::run`, over QUIC and over TCP) serving a stdio route. Runs until
//! it is killed, or its parent is gone.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent::{
    live_line, ConnectOptions, OwnerPolicy, Reporter, RequestLine, StdioLimits, TransportChoice,
    Upstream,
};
use anyhow::Context as _;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_util::compat::TokioAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;
use tunnel::mux::{MuxConnection, Side};
use tunnel::quic::QuicSettings;

use crate::tunnel_hop::{PeerSpec, ECHO_BYTES, ROUTE};

/// Serves the far side as `spec` (a [`PeerSpec`] file) says.
pub fn run(spec: &Path) -> anyhow::Result<()> {
    relay::logging::init(relay::logging::LogFormat::Text);
    let spec: PeerSpec = serde_json::from_slice(
        &std::fs::read(spec).with_context(|| format!("read {}", spec.display()))?,
    )?;
    // One thread, as `agent connect` runs (see agent::cli).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(spec))
}

async fn serve(spec: PeerSpec) -> anyhow::Result<()> {
    let parent = std::os::unix::process::parent_id();
    let tls = tunnel::tls::client_config(Some(&spec.ca), &[protocol::ALPN])?;
    // As `agent connect` dials.
    let settings = QuicSettings {
        max_incoming_streams: tunnel::mux::MAX_STREAMS as u32,
        keep_alive: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(20),
        initial_rtt: Duration::from_millis(100),
    };
    let (endpoint, _) = tunnel::quic::client_endpoint(spec.quinn, tls.clone(), &settings)?;
    let quinn = endpoint.connect(spec.quinn, "127.0.0.1")?.await?;
    tokio::spawn(echo_quinn(quinn));

    let tcp = tokio::net::TcpStream::connect(spec.tls_yamux).await?;
    tcp.set_nodelay(true)?;
    let tls_stream = TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    tokio::spawn(echo_yamux(MuxConnection::start(
        tls_stream.compat(),
        Side::Client,
    )));

    let stop = CancellationToken::new();
    let exe = std::env::current_exe()?.display().to_string();
    for (addr, transport) in [
        (spec.drawbridge_quic, TransportChoice::Quic),
        (spec.drawbridge_tcp, TransportChoice::Tcp),
    ] {
        let limits = StdioLimits {
            idle_timeout: Duration::from_secs(600),
            max_sessions: 1,
            max_sessions_per_identity: 1,
            unused_timeout: Duration::from_secs(60),
        };
        // Never started: a GET without an event stream is answered by the
        // agent's stdio bridge itself.
        let upstream = Upstream::stdio(exe.clone(), Vec::new(), ROUTE, limits, stop.clone())?;
        let opts = ConnectOptions {
            relay: format!("https://{addr}").parse()?,
            token: "bench".into(),
            ca_cert: Some(spec.ca.clone()),
            route: ROUTE.into(),
            upstream: Arc::new(upstream),
            transport,
            drain_timeout: Duration::from_secs(1),
            quic_retry_interval: Duration::from_secs(300),
            policy: OwnerPolicy::from_flags(&[], None, false)?,
            plain_http: false,
            max_body: 4 * 1024 * 1024,
            accept_tool_changes: false,
            inspector: None,
            relay_connections: 1,
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = agent::run(opts, stop, Arc::new(Printer)).await {
                eprintln!("the agent ended: {e}");
            }
        });
    }
    // Killed by the measuring side when it is done; gone with it otherwise.
    while std::os::unix::process::parent_id() == parent {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.cancel();
    Ok(())
}

/// Every stream opened on `conn` is read to its end and sent back.
async fn echo_quinn(conn: quinn::Connection) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        tokio::spawn(async move {
            if let Ok(data) = recv.read_to_end(ECHO_BYTES).await {
                if send.write_all(&data).await.is_ok() {
                    let _ = send.finish();
                }
            }
        });
    }
}

/// [`echo_quinn`] over yamux.
async fn echo_yamux(conn: Arc<MuxConnection>) {
    use futures::io::{AsyncReadExt, AsyncWriteExt};
    while let Some(mut stream) = conn.accept().await {
        tokio::spawn(async move {
            let mut data = Vec::with_capacity(ECHO_BYTES);
            if stream.read_to_end(&mut data).await.is_ok() && stream.write_all(&data).await.is_ok()
            {
                let _ = stream.close().await;
            }
        });
    }
}

/// What `agent connect` prints: a line per request on stdout.
struct Printer;

impl Reporter for Printer {
    fn live(&self, route: &str, url: &str, transport: tunnel::Transport) {
        println!("route {route} is live at {url} (via {transport})");
    }

    fn reconnecting(&self, reason: &str, delay: Duration) {
        eprintln!("{reason}; reconnecting in {delay:.1?}");
    }

    fn request(&self, line: &RequestLine) {
        common::lines::print(
            common::lines::Stream::Stdout,
            format!("{}\n", live_line(line, std::time::SystemTime::now())).as_bytes(),
        );
    }
}
