//! QUIC endpoints for the tunnel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, EndpointConfig, IdleTimeout, TokioRuntime, TransportConfig, VarInt};

use crate::error::TunnelError;
use crate::udp::{self, BufferSizes};

/// Flow-control and liveness settings for one side of the tunnel.
#[derive(Debug, Clone)]
pub struct QuicSettings {
    /// How many bidirectional streams the peer may open at once.
    pub max_incoming_streams: u32,
    /// QUIC-level keep-alive (keeps NAT bindings open).
    pub keep_alive: Duration,
    /// Connection considered dead after this long without any packet.
    pub idle_timeout: Duration,
    /// The RTT assumed before any is measured: it sets how soon a lost
    /// handshake packet is resent (quinn's default of 333 ms makes a dial
    /// that races a relay restart wait a full second).
    pub initial_rtt: Duration,
}

impl QuicSettings {
    fn transport(&self) -> Result<TransportConfig, TunnelError> {
        let mut t = TransportConfig::default();
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_incoming_streams));
        t.max_concurrent_uni_streams(VarInt::from_u32(0));
        // Windows sized for bulk transfers at hundreds of MB/s on a short RTT.
        t.stream_receive_window(VarInt::from_u32(8 * 1024 * 1024));
        t.receive_window(VarInt::from_u32(32 * 1024 * 1024));
        t.send_window(32 * 1024 * 1024);
        t.keep_alive_interval(Some(self.keep_alive));
        t.initial_rtt(self.initial_rtt);
        t.max_idle_timeout(Some(
            IdleTimeout::try_from(self.idle_timeout)
                .map_err(|e| TunnelError::Quic(format!("idle timeout: {e}")))?,
        ));
        Ok(t)
    }
}

/// A server endpoint on an already bound UDP socket.
pub fn server_endpoint(
    socket: std::net::UdpSocket,
    tls: rustls::ServerConfig,
    settings: &QuicSettings,
) -> Result<Endpoint, TunnelError> {
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TunnelError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = settings.transport()?;
    // No batches of datagrams (GSO) from the relay's side: each connection
    // keeps a send buffer as large as the largest batch it ever sent (the
    // handshake's, several packets: ~6 KiB an idle agent holds for
    // nothing), and what the relay sends an agent is mostly
    // acknowledgements and small requests, one datagram at a time anyway.
    // Bulk answers flow the other way, batched by the agent.
    transport.enable_segmentation_offload(false);
    server.transport_config(Arc::new(transport));
    // Clients must prove their address before we keep state for them when under load.
    server.migration(true);
    let endpoint = Endpoint::new(
        EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(TokioRuntime),
    )?;
    Ok(endpoint)
}

/// A client endpoint bound to an ephemeral port of the right address family.
pub fn client_endpoint(
    remote: SocketAddr,
    tls: rustls::ClientConfig,
    settings: &QuicSettings,
) -> Result<(Endpoint, BufferSizes), TunnelError> {
    let bind: SocketAddr = if remote.is_ipv6() {
        "[::]:0"
            .parse()
            .map_err(|_| TunnelError::Quic("bad bind".into()))?
    } else {
        "0.0.0.0:0"
            .parse()
            .map_err(|_| TunnelError::Quic("bad bind".into()))?
    };
    let (socket, sizes) = udp::bind(bind)?;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TunnelError::Quic(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(settings.transport()?));
    let mut endpoint = Endpoint::new(
        EndpointConfig::default(),
        None,
        socket,
        Arc::new(TokioRuntime),
    )?;
    endpoint.set_default_client_config(client);
    Ok((endpoint, sizes))
}
