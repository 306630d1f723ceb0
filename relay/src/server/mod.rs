//! Starting and stopping a relay: its one port ([`listener`]), the agents'
//! tunnels ([`agents`]), idle connections ([`idle_connection`]) and the admin
//! listener ([`admin_http`]).

pub mod admin_http;
pub mod agents;
pub mod idle_connection;
pub mod listener;
pub mod membership;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::registry::Registry;
use crate::audit::Audit;
use crate::config::{RelayConfig, TlsSource};
use crate::error::RelayError;
use crate::gateway::legacy_sse::LegacySessions;
use crate::http::origin::AllowedOrigins;
use crate::policies::Policies;
use crate::state::{RelayState, SharedState};
use crate::tls::certs;
use crate::tls::resolver::{certified_key, not_after, CertResolver, ACME_TLS_ALPN};

/// A relay that is serving.
pub struct RunningRelay {
    /// The bound address (TCP and UDP share the port).
    pub local_addr: SocketAddr,
    pub public_url: String,
    /// The CA to trust, when the certificate is self-signed.
    pub ca_path: Option<PathBuf>,
    /// The admin listener's address (metrics, health), if it has one.
    pub admin_addr: Option<SocketAddr>,
    pub state: SharedState,
    /// The certificate served (swap it to replace it without a restart).
    pub certs: Arc<CertResolver>,
    quic: Option<quinn::Endpoint>,
    tasks: TaskTracker,
    /// Ends the admin listener, after the drain.
    admin_stop: CancellationToken,
    /// Counts reloads, for their outcomes.
    reloads: std::sync::atomic::AtomicU64,
}

/// Binds the relay's port and starts serving.
pub async fn start(config: RelayConfig) -> Result<RunningRelay, RelayError> {
    let store = crate::store::backend::open(
        &config.state_dir,
        config.database_url.as_ref().map(|u| u.expose()),
    )
    .await?;
    let audit = Audit::open(
        &config.state_dir,
        config.audit_arguments,
        config.audit_rotate_size,
    )?;
    let policies = Policies::load(config.policy.as_deref())?;
    let (tcp, udp) = bind(config.listen, config.quic)?;
    let local_addr = tcp.local_addr().map_err(|source| RelayError::Bind {
        addr: config.listen.to_string(),
        source,
    })?;
    let public_url = match (&config.public_url, &config.tls) {
        (Some(u), _) => u.trim_end_matches('/').to_owned(),
        (None, TlsSource::Acme(acme)) => with_port(&acme.domain, local_addr.port()),
        (None, _) => default_public_url(local_addr),
    };
    let public_host = url::Url::parse(&public_url)
        .map_err(|e| RelayError::Config(format!("--public-url {public_url:?}: {e}")))?
        .host_str()
        .map(|h| h.trim_matches(['[', ']']).to_owned())
        .ok_or_else(|| RelayError::Config(format!("--public-url {public_url:?} has no host")))?;
    let origins = AllowedOrigins::new(&public_url, &config.allow_origins)
        .map_err(|e| RelayError::Config(e.to_string()))?;
    // Upstream identity providers are discovered before the relay serves
    // anything: a provider that cannot be reached is a startup error.
    let upstream =
        crate::identity::upstream::Upstream::start(&config.upstream, &public_url).await?;
    if config.upstream.dev_allow_http_loopback {
        tracing::warn!(
            "--upstream-dev-allow-http-loopback: identity providers may be reached over plain \
             http on loopback addresses. For development only"
        );
    }

    let mut acme = None;
    let (key, ca_path) = match &config.tls {
        TlsSource::Files { cert, key } => {
            let k = certs::from_files(cert, key)?;
            (certified_key(k.chain, k.key)?, None)
        }
        TlsSource::SelfSigned => {
            let k = if config.database_url.is_some() {
                certs::self_signed_shared(&*store, &config.state_dir, &[public_host]).await?
            } else {
                certs::self_signed(&config.state_dir, &[public_host])?
            };
            (
                certified_key(k.chain, k.key)?,
                Some(certs::ca_path(&config.state_dir)),
            )
        }
        TlsSource::Acme(settings) => {
            let initial = crate::tls::acme::initial_certificate(settings, &config.state_dir)?;
            acme = Some((settings.clone(), initial.stored));
            (initial.key, None)
        }
    };
    let expiry = key.cert.first().map(|leaf| not_after(leaf));
    let certs = Arc::new(CertResolver::new(key));
    let mut https_alpn: Vec<&[u8]> = vec![b"h2", b"http/1.1", protocol::ALPN];
    if acme.is_some() {
        https_alpn.push(ACME_TLS_ALPN);
    }
    let https_tls = tunnel::tls::server_config_with_resolver(certs.clone(), &https_alpn)?;
    let admin = match config.admin_listen {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| RelayError::Bind {
                    addr: format!("{addr} (--admin-listen)"),
                    source,
                })?;
            Some(l)
        }
        None => None,
    };
    let cluster = crate::cluster::node::Node::from_config(&config, local_addr)?.map(Arc::new);
    let mut metrics = crate::metrics::Metrics::new();
    if let Some(node) = &cluster {
        metrics.node(&node.id, &node.agent_address);
    }
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
        affinity: crate::sessions::affinity::Affinity::default(),
        oauth: crate::state::OAuthState::new(config.cimd.clone(), upstream)?,
        limits: crate::limits::rate::RequestLimits::new(
            config.rate_limit_route,
            config.rate_limit_identity,
        ),
        conn_limits: crate::limits::connections::ConnLimits::new(
            config.max_connections_per_ip,
            config.max_quic_handshakes_per_ip,
        ),
        metrics: Arc::new(metrics),
        certs: certs.clone(),
        cluster: cluster.clone(),
    });
    match expiry {
        Some(Ok(t)) => state.metrics.set_certificate_expiry(t),
        Some(Err(e)) => tracing::warn!(error = %e, "cannot read the certificate's expiry"),
        None => {}
    }
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
            let quic_tls =
                tunnel::tls::server_config_with_resolver(certs.clone(), &[protocol::ALPN])?;
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
    if let Some(node) = &cluster {
        tasks.spawn(crate::server::membership::run(state.clone(), node.clone()));
    } else if state.store.is_remote() {
        tasks.spawn(crate::server::membership::warn_if_outside(state.clone()));
    }
    if state.store.is_remote() {
        tasks.spawn(crate::audit::ship::run(
            state.store.backend(),
            state.metrics.clone(),
            state.config.state_dir.clone(),
            state.shutdown.clone(),
        ));
    }
    if let Some((settings, stored)) = acme {
        let acme = crate::tls::acme::Acme::new(settings, &config.state_dir, certs.clone());
        if config.database_url.is_some() {
            tasks.spawn(
                acme.shared(state.store.backend(), state.metrics.clone())
                    .run_shared(state.shutdown.clone()),
            );
        } else {
            tasks.spawn(acme.run(stored, state.shutdown.clone()));
        }
    }
    let admin_stop = CancellationToken::new();
    let admin_addr = match admin {
        Some(l) => {
            let addr = l.local_addr().ok();
            let l = tokio::net::TcpListener::from_std(l).map_err(|source| RelayError::Bind {
                addr: "--admin-listen".into(),
                source,
            })?;
            tasks.spawn(admin_http::serve(state.clone(), l, admin_stop.clone()));
            addr
        }
        None => None,
    };
    tracing::info!(
        %local_addr,
        %public_url,
        quic = quic.is_some(),
        state_dir = %config.state_dir.display(),
        // What the runtime is, not what was asked (see `--threads`).
        threads = tokio::runtime::Handle::current().metrics().num_workers(),
        "relay listening"
    );
    Ok(RunningRelay {
        local_addr,
        public_url,
        ca_path,
        admin_addr,
        state,
        certs,
        quic,
        tasks,
        admin_stop,
        reloads: std::sync::atomic::AtomicU64::new(0),
    })
}

impl RunningRelay {
    /// Reads the organisation's policy and the certificate files again
    /// (see [`crate::reload`]); what was refused keeps running as it was.
    pub fn reload(&self) -> crate::reload::Outcome {
        let seq = self
            .reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        crate::reload::reload(&self.state, seq)
    }

    /// Graceful stop: agents get `GoAway`, in-flight requests get
    /// `drain_timeout` to finish, then everything closes.
    pub async fn shutdown(self) {
        tracing::info!("relay shutting down");
        // Refuse new QUIC handshakes at once, so that agents retry promptly
        // instead of waiting on a relay that will not answer.
        if let Some(endpoint) = &self.quic {
            endpoint.set_server_config(None);
        }
        // Agents stop being told to dial this node.
        if let Some(node) = &self.state.cluster {
            crate::server::membership::leave(&self.state, node).await;
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
        self.admin_stop.cancel();
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
    with_port(&host, addr.port())
}

fn with_port(host: &str, port: u16) -> String {
    if port == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{port}")
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
