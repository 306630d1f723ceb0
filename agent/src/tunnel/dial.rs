//! Reaching the relay: QUIC, TLS over TCP, or both raced.
//!
//! `auto` does not wait for QUIC to fail before trying TCP (as tunnels that
//! fall back only after minutes do). QUIC starts first; TCP starts a moment
//! later; whichever completes its handshake wins, except that a TCP win waits a
//! short grace period for QUIC, which is preferred. A network where QUIC lost
//! is remembered, so the next reconnects go straight to TCP, and QUIC is tried
//! again later.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_util::compat::TokioAsyncReadCompatExt;
use tunnel::mux::{MuxConnection, Side};
use tunnel::quic::QuicSettings;
use tunnel::TunnelConnection;

use crate::error::{AgentError, DialError};

/// Which transport `agent connect` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TransportChoice {
    /// Race QUIC against TLS over TCP; prefer QUIC.
    #[default]
    Auto,
    /// QUIC only.
    Quic,
    /// TLS over TCP only.
    Tcp,
}

/// How long one transport's connect + handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// QUIC's head start before TCP is tried.
const TCP_DELAY: Duration = Duration::from_millis(50);
/// How long a TCP win waits for QUIC to finish too.
const QUIC_GRACE: Duration = Duration::from_millis(250);

/// Dials one relay.
pub struct Dialer {
    /// Where to connect (the relay's host, or one node's address).
    host: String,
    port: u16,
    /// The relay's TLS name (SNI, and the name its certificate must have):
    /// the relay's host, whatever node is dialled.
    tls_name: String,
    server_name: ServerName<'static>,
    tcp_tls: Arc<rustls::ClientConfig>,
    quic_tls: rustls::ClientConfig,
    quic: QuicSettings,
    /// When QUIC last lost to TCP (UDP blocked or slow on this network).
    quic_lost_at: Mutex<Option<Instant>>,
    /// How long to prefer TCP after QUIC lost.
    pub quic_retry_interval: Duration,
}

impl Dialer {
    /// A dialer for `https://host[:port]`, trusting the web PKI and `ca_cert`.
    pub fn new(relay_url: &url::Url, ca_cert: Option<&Path>) -> Result<Dialer, AgentError> {
        let bad = |reason: &str| AgentError::RelayUrl {
            url: relay_url.to_string(),
            reason: reason.to_owned(),
        };
        if relay_url.scheme() != "https" {
            return Err(bad("the relay is reached over https://"));
        }
        let host = relay_url
            .host_str()
            .ok_or_else(|| bad("no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = relay_url.port_or_known_default().unwrap_or(443);
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| bad("the host is not a valid TLS server name"))?;
        let tcp_tls = tunnel::tls::client_config(ca_cert, &[protocol::ALPN])?;
        let quic_tls = tunnel::tls::client_config(ca_cert, &[protocol::ALPN])?;
        Ok(Dialer {
            tls_name: host.clone(),
            host,
            port,
            server_name,
            tcp_tls: Arc::new(tcp_tls),
            quic_tls,
            quic: QuicSettings {
                max_incoming_streams: tunnel::mux::MAX_STREAMS as u32,
                keep_alive: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(20),
                initial_rtt: Duration::from_millis(100),
            },
            quic_lost_at: Mutex::new(None),
            quic_retry_interval: Duration::from_secs(300),
        })
    }

    /// A dialer of one node of the relay at `address` (`HOST:PORT`, as the
    /// relay's [`protocol::Control::Nodes`] says), with the relay's TLS name
    /// and trust.
    pub fn for_node(&self, address: &str) -> Result<Dialer, DialError> {
        let bad = || DialError::Resolve {
            host: address.to_owned(),
            reason: "not HOST:PORT".into(),
        };
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        Ok(Dialer {
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
            tls_name: self.tls_name.clone(),
            server_name: self.server_name.clone(),
            tcp_tls: self.tcp_tls.clone(),
            quic_tls: self.quic_tls.clone(),
            quic: self.quic.clone(),
            quic_lost_at: Mutex::new(None),
            quic_retry_interval: self.quic_retry_interval,
        })
    }

    async fn resolve(&self) -> Result<SocketAddr, DialError> {
        let mut addrs = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| DialError::Resolve {
                host: self.host.clone(),
                reason: e.to_string(),
            })?;
        addrs.next().ok_or_else(|| DialError::Resolve {
            host: self.host.clone(),
            reason: "no addresses".into(),
        })
    }

    /// Connects with the chosen transport.
    pub async fn dial(&self, choice: TransportChoice) -> Result<TunnelConnection, DialError> {
        let addr = self.resolve().await?;
        match choice {
            TransportChoice::Quic => self.dial_quic(addr).await,
            TransportChoice::Tcp => self.dial_tcp(addr).await,
            TransportChoice::Auto => self.race(addr).await,
        }
    }

    /// Whether QUIC lost recently enough that TCP should be used without racing.
    fn quic_recently_lost(&self) -> bool {
        let lost = self.quic_lost_at.lock().unwrap_or_else(|p| p.into_inner());
        matches!(*lost, Some(t) if t.elapsed() < self.quic_retry_interval)
    }

    fn remember_quic(&self, worked: bool) {
        let mut lost = self.quic_lost_at.lock().unwrap_or_else(|p| p.into_inner());
        *lost = if worked { None } else { Some(Instant::now()) };
    }

    async fn race(&self, addr: SocketAddr) -> Result<TunnelConnection, DialError> {
        if self.quic_recently_lost() {
            tracing::debug!("QUIC lost recently on this network; using TCP");
            return self.dial_tcp(addr).await;
        }
        let quic = self.dial_quic(addr);
        let tcp = async {
            tokio::time::sleep(TCP_DELAY).await;
            self.dial_tcp(addr).await
        };
        tokio::pin!(quic, tcp);
        let mut quic_err = None;
        let mut tcp_err = None;
        loop {
            tokio::select! {
                r = &mut quic, if quic_err.is_none() => match r {
                    Ok(c) => { self.remember_quic(true); return Ok(c) }
                    Err(e) => {
                        tracing::debug!(error = %e, "QUIC attempt failed");
                        quic_err = Some(e.to_string());
                    }
                },
                r = &mut tcp, if tcp_err.is_none() => match r {
                    Ok(tcp_conn) => {
                        if quic_err.is_none() {
                            if let Ok(Ok(c)) = tokio::time::timeout(QUIC_GRACE, &mut quic).await {
                                tcp_conn.close("quic preferred");
                                self.remember_quic(true);
                                return Ok(c);
                            }
                        }
                        tracing::info!("QUIC did not connect (UDP blocked?); using TLS over TCP and retrying QUIC later");
                        self.remember_quic(false);
                        return Ok(tcp_conn);
                    }
                    Err(e) => tcp_err = Some(e.to_string()),
                },
            }
            if let (Some(q), Some(t)) = (&quic_err, &tcp_err) {
                return Err(DialError::Both {
                    quic: q.clone(),
                    tcp: t.clone(),
                });
            }
        }
    }

    /// One QUIC attempt, for moving a TCP tunnel back to QUIC.
    pub async fn probe_quic(&self) -> Option<TunnelConnection> {
        let addr = self.resolve().await.ok()?;
        match self.dial_quic(addr).await {
            Ok(c) => {
                self.remember_quic(true);
                Some(c)
            }
            Err(e) => {
                tracing::debug!(error = %e, "QUIC probe failed");
                None
            }
        }
    }

    /// Connects over QUIC.
    pub async fn dial_quic(&self, addr: SocketAddr) -> Result<TunnelConnection, DialError> {
        let (endpoint, sizes) =
            tunnel::quic::client_endpoint(addr, self.quic_tls.clone(), &self.quic)
                .map_err(|e| DialError::Quic(e.to_string()))?;
        if sizes.is_low() {
            tracing::debug!(
                recv = sizes.recv,
                send = sizes.send,
                "small UDP socket buffers"
            );
        }
        let connecting = endpoint
            .connect(addr, &self.tls_name)
            .map_err(|e| DialError::Quic(e.to_string()))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                DialError::Quic(format!("no answer from {addr} within {CONNECT_TIMEOUT:?}"))
            })?
            .map_err(|e| DialError::Quic(e.to_string()))?;
        Ok(TunnelConnection::Quic(conn))
    }

    /// Connects over TLS on TCP and starts yamux.
    pub async fn dial_tcp(&self, addr: SocketAddr) -> Result<TunnelConnection, DialError> {
        let fut = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| DialError::Tcp(format!("connect {addr}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let tls = TlsConnector::from(self.tcp_tls.clone())
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| DialError::Tcp(format!("TLS: {e}")))?;
            if tls.get_ref().1.alpn_protocol() != Some(protocol::ALPN) {
                return Err(DialError::Tcp(
                    "the server at this address does not speak the drawbridge tunnel (ALPN); is it a drawbridge relay?".into(),
                ));
            }
            let conn = MuxConnection::start(tls.compat(), Side::Client);
            Ok(TunnelConnection::Mux { conn, remote: addr })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, fut)
            .await
            .map_err(|_| {
                DialError::Tcp(format!("no answer from {addr} within {CONNECT_TIMEOUT:?}"))
            })?
    }
}
