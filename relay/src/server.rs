//! Starting and stopping a relay.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::Audit;
use crate::certs;
use crate::config::{RelayConfig, TlsSource};
use crate::error::RelayError;
use crate::legacy_sse::LegacySessions;
use crate::origin::AllowedOrigins;
use crate::policies::Policies;
use crate::registry::Registry;
use crate::state::{RelayState, SharedState};
use crate::store::Store;
use crate::{agents, listener};

/// A relay that is serving.
pub struct RunningRelay {
    /// The bound address (TCP and UDP share the port).
    pub local_addr: SocketAddr,
    pub public_url: String,
    /// The CA to trust, when the certificate is self-signed.
    pub ca_path: Option<PathBuf>,
    pub state: SharedState,
    quic: Option<quinn::Endpoint>,
    tasks: TaskTracker,
}

/// Binds the relay's port and starts serving.
pub async fn start(config: RelayConfig) -> Result<RunningRelay, RelayError> {
    let store = Store::open(&config.state_dir)?;
    let audit = Audit::open(&config.state_dir, config.audit_arguments)?;
    let policies = Policies::load(config.policy.as_deref())?;
    let (tcp, udp) = bind(config.listen, config.quic)?;
    let local_addr = tcp.local_addr().map_err(|source| RelayError::Bind {
        addr: config.listen.to_string(),
        source,
    })?;
    let public_url = match &config.public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => default_public_url(local_addr),
    };
    let public_host = url::Url::parse(&public_url)
        .map_err(|e| RelayError::Config(format!("--public-url {public_url:?}: {e}")))?
        .host_str()
        .map(|h| h.trim_matches(['[', ']']).to_owned())
        .ok_or_else(|| RelayError::Config(format!("--public-url {public_url:?} has no host")))?;
    let origins = AllowedOrigins::new(&public_url, &config.allow_origins)
        .map_err(|e| RelayError::Config(e.to_string()))?;

    let (key, ca_path) = match &config.tls {
        TlsSource::Files { cert, key } => (certs::from_files(cert, key)?, None),
        TlsSource::SelfSigned => (
            certs::self_signed(&config.state_dir, &[public_host])?,
            Some(certs::ca_path(&config.state_dir)),
        ),
    };
    let https_tls = tunnel::tls::server_config(
        key.chain.clone(),
        key.key.clone_key(),
        &[b"h2", b"http/1.1", protocol::ALPN],
    )?;
    let state = Arc::new(RelayState {
        config: config.clone(),
        public_url: public_url.clone(),
        store,
        audit,
        registry: Registry::default(),
        shutdown: CancellationToken::new(),
        requests: TaskTracker::new(),
        policies,
        origins,
        legacy: LegacySessions::default(),
        oauth: crate::oauth::OAuthState::new(config.cimd.clone())?,
        limits: crate::rate_limits::RequestLimits::new(
            config.rate_limit_route,
            config.rate_limit_identity,
        ),
        conn_limits: crate::conn_limits::ConnLimits::new(
            config.max_connections_per_ip,
            config.max_quic_handshakes_per_ip,
        ),
    });
    if config.cimd.allow_loopback {
        tracing::warn!(
            "--cimd-dev-allow-loopback: client metadata documents may be fetched from loopback \
             addresses. For development only"
        );
    }
    if config.bench_disable_policy_and_audit {
        tracing::warn!(
            "--bench-disable-policy-and-audit: JSON-RPC messages are NOT classified, NOT decided \
             by policy and NOT audited. For benchmarks only; never run a relay like this"
        );
    }
    let tasks = TaskTracker::new();
    let quic = match udp {
        Some((socket, sizes)) => {
            if sizes.is_low() {
                tracing::warn!(
                    recv = sizes.recv,
                    send = sizes.send,
                    wanted = tunnel::udp::WANTED_BUFFER,
                    "the OS granted small UDP buffers; QUIC may drop packets under load. \
                     Raise net.core.rmem_max and net.core.wmem_max"
                );
            }
            let quic_tls = tunnel::tls::server_config(key.chain, key.key, &[protocol::ALPN])?;
            let endpoint = tunnel::quic::server_endpoint(
                socket,
                quic_tls,
                &tunnel::quic::QuicSettings {
                    // The agent opens only its control stream.
                    max_incoming_streams: 1,
                    keep_alive: config.keepalive_interval,
                    idle_timeout: config.keepalive_interval * 4,
                    initial_rtt: Duration::from_millis(333),
                },
            )?;
            tasks.spawn(listener::serve_quic(state.clone(), endpoint.clone()));
            Some(endpoint)
        }
        None => None,
    };
    let tcp = tokio::net::TcpListener::from_std(tcp).map_err(|source| RelayError::Bind {
        addr: local_addr.to_string(),
        source,
    })?;
    tasks.spawn(listener::serve_tcp(state.clone(), tcp, Arc::new(https_tls)));
    tasks.spawn(agents::revocation_watch(state.clone()));
    tracing::info!(
        %local_addr,
        %public_url,
        quic = quic.is_some(),
        state_dir = %config.state_dir.display(),
        "relay listening"
    );
    Ok(RunningRelay {
        local_addr,
        public_url,
        ca_path,
        state,
        quic,
        tasks,
    })
}

impl RunningRelay {
    /// Graceful stop: agents get `GoAway`, in-flight requests get
    /// `drain_timeout` to finish, then everything closes.
    pub async fn shutdown(self) {
        tracing::info!("relay shutting down");
        // Refuse new QUIC handshakes at once, so that agents retry promptly
        // instead of waiting on a relay that will not answer.
        if let Some(endpoint) = &self.quic {
            endpoint.set_server_config(None);
        }
        self.state.shutdown.cancel();
        self.state.requests.close();
        let _ =
            tokio::time::timeout(self.state.config.drain_timeout, self.state.requests.wait()).await;
        // Let the GoAway frames reach the agents before the connections close.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for session in self.state.registry.sessions() {
            session.conn.close("relay shutdown");
        }
        if let Some(endpoint) = &self.quic {
            endpoint.close(quinn::VarInt::from_u32(0), b"relay shutdown");
            let _ = tokio::time::timeout(Duration::from_millis(250), endpoint.wait_idle()).await;
        }
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.tasks.wait()).await;
    }
}

fn default_public_url(addr: SocketAddr) -> String {
    let ip = addr.ip();
    let host = if ip.is_unspecified() {
        "localhost".to_owned()
    } else if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    if addr.port() == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{}", addr.port())
    }
}

type UdpBinding = Option<(std::net::UdpSocket, tunnel::udp::BufferSizes)>;

/// Binds TCP and, if wanted, UDP on the same port. With port 0 the OS picks a
/// TCP port; if its UDP twin is taken we try again with another.
fn bind(addr: SocketAddr, quic: bool) -> Result<(std::net::TcpListener, UdpBinding), RelayError> {
    let err = |source| RelayError::Bind {
        addr: addr.to_string(),
        source,
    };
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let tcp = bind_tcp(addr).map_err(err)?;
        if !quic {
            return Ok((tcp, None));
        }
        let port = tcp.local_addr().map_err(err)?.port();
        match tunnel::udp::bind(SocketAddr::new(addr.ip(), port)) {
            Ok(udp) => return Ok((tcp, Some(udp))),
            Err(e) => last = Some(e),
        }
    }
    Err(RelayError::Bind {
        addr: format!("{addr} (udp)"),
        source: last.unwrap_or_else(|| std::io::Error::other("no port")),
    })
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
