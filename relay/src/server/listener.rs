//! The relay's one port: TCP for HTTPS and the TLS tunnel (told apart by
//! ALPN), UDP for the QUIC tunnel.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::compat::TokioAsyncReadCompatExt;
use tunnel::mux::{MuxConnection, Side};
use tunnel::TunnelConnection;

use crate::gateway;
use crate::limits::connections::Slot;
use crate::server::agents;
use crate::server::idle_connection::IdleTracker;
use crate::state::SharedState;

/// Accepts TCP connections until shutdown.
pub async fn serve_tcp(state: SharedState, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = state.shutdown.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match state.conn_limits.connections.acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(held) => {
                if state.conn_limits.connections.should_log(peer.ip()) {
                    tracing::warn!(ip = %peer.ip(), held, "too many connections from one address (--max-connections-per-ip); closing new ones");
                }
                drop(tcp);
                continue;
            }
        };
        let state = state.clone();
        let acceptor = acceptor.clone();
        state.requests.clone().spawn(async move {
            serve_tcp_connection(state, acceptor, tcp, peer).await;
            drop(slot);
        });
    }
}

async fn serve_tcp_connection(
    state: SharedState,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(state.config.handshake_timeout, acceptor.accept(tcp)).await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let alpn = tls.get_ref().1.alpn_protocol();
    if alpn == Some(crate::tls::resolver::ACME_TLS_ALPN) {
        // An ACME CA validating TLS-ALPN-01: the handshake was the answer
        // (RFC 8737 §3), no application data follows.
        tracing::debug!(%peer, "answered an ACME tls-alpn-01 validation");
        return;
    }
    let is_tunnel = alpn == Some(protocol::ALPN);
    if is_tunnel {
        let conn = MuxConnection::start(tls.compat(), Side::Server);
        let conn = TunnelConnection::Mux { conn, remote: peer };
        // Tunnels are not request work: do not hold up the HTTP drain. The
        // caller's connection slot is released when this returns; the
        // tunnel takes a slot of its own.
        let Ok(slot) = state.conn_limits.connections.acquire(peer.ip()) else {
            return;
        };
        tokio::spawn(async move {
            agents::serve_connection(state, conn).await;
            drop(slot);
        });
        return;
    }
    serve_http(state, tls, peer).await;
}

async fn serve_http(
    state: SharedState,
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    peer: SocketAddr,
) {
    let svc_state = state.clone();
    let idle = IdleTracker::default();
    let tracker = idle.clone();
    let service = service_fn(move |req| {
        let in_flight = tracker.begin();
        let handled = gateway::handle(svc_state.clone(), peer, req);
        async move { handled.await.map(|r| in_flight.hold(r)) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Fixed, generous windows rather than adaptive ones: bulk bodies are
        // not throttled, and h2's budget against floods of small DATA frames
        // (half the connection window) is not exhausted by a burst of many
        // small concurrent requests.
        .initial_stream_window_size(1024 * 1024)
        .initial_connection_window_size(8 * 1024 * 1024)
        .max_concurrent_streams(256);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let idle_timeout = state.config.http_idle_timeout;
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(%peer, error = ?e, "HTTP connection ended with an error");
            }
        }
        _ = state.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(state.config.drain_timeout, conn).await;
        }
        _ = idle.idle_for(idle_timeout), if !idle_timeout.is_zero() => {
            tracing::debug!(%peer, "closing an idle HTTP connection");
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(state.config.drain_timeout, conn).await;
        }
    }
}

/// Accepts QUIC tunnel connections until shutdown.
pub async fn serve_quic(state: SharedState, endpoint: quinn::Endpoint) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = state.shutdown.cancelled() => return,
        };
        let Some(incoming) = incoming else { return };
        let remote = incoming.remote_address();
        let limits = &state.conn_limits;
        // Bounded per address: handshakes in progress, then connections. A
        // flood of half-open handshakes costs one refusal packet each.
        let handshake = match limits.quic_handshakes.acquire(remote.ip()) {
            Ok(slot) => slot,
            Err(held) => {
                if limits.quic_handshakes.should_log(remote.ip()) {
                    tracing::warn!(ip = %remote.ip(), held, "too many QUIC handshakes in progress from one address (--max-quic-handshakes-per-ip); refusing new ones");
                }
                incoming.refuse();
                continue;
            }
        };
        let Ok(slot) = limits.connections.acquire(remote.ip()) else {
            if limits.connections.should_log(remote.ip()) {
                tracing::warn!(ip = %remote.ip(), "too many connections from one address (--max-connections-per-ip); refusing QUIC");
            }
            incoming.refuse();
            continue;
        };
        let state = state.clone();
        // Boxed, and given away to the handshake: the connection's first
        // packet (hundreds of bytes) and the handshake's slot are not kept
        // in the session's task while the agent stays connected.
        let handshake = Box::new((incoming, handshake));
        tokio::spawn(async move {
            let timeout = state.config.handshake_timeout;
            let Some(conn) = quic_handshake(handshake, timeout).await else {
                return;
            };
            agents::serve_connection(state, TunnelConnection::Quic(conn)).await;
            drop(slot);
        });
    }
}

/// Completes a QUIC handshake within `timeout`; its slot is released
/// when it ends.
async fn quic_handshake(
    handshake: Box<(quinn::Incoming, Slot)>,
    timeout: std::time::Duration,
) -> Option<quinn::Connection> {
    let (incoming, _slot) = *handshake;
    let remote = incoming.remote_address();
    match tokio::time::timeout(timeout, incoming).await {
        Ok(Ok(conn)) => Some(conn),
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "QUIC handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%remote, "QUIC handshake timed out");
            None
        }
    }
}
