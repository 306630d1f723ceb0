//! One tunnel connection, over QUIC or over TLS+yamux.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::error::TunnelError;
use crate::mux::MuxConnection;
use crate::stream::{split_mux, RecvHalf, SendHalf};

/// Which transport carries a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Quic,
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Quic => "quic",
            Transport::Tcp => "tcp",
        })
    }
}

/// An established tunnel connection. Cheap to clone.
#[derive(Clone)]
pub enum TunnelConnection {
    Quic(quinn::Connection),
    Mux {
        conn: Arc<MuxConnection>,
        remote: SocketAddr,
    },
}

impl fmt::Debug for TunnelConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TunnelConnection({} to {})",
            self.transport(),
            self.remote_addr()
        )
    }
}

impl TunnelConnection {
    pub fn transport(&self) -> Transport {
        match self {
            TunnelConnection::Quic(_) => Transport::Quic,
            TunnelConnection::Mux { .. } => Transport::Tcp,
        }
    }

    pub fn remote_addr(&self) -> SocketAddr {
        match self {
            TunnelConnection::Quic(c) => c.remote_address(),
            TunnelConnection::Mux { remote, .. } => *remote,
        }
    }

    /// Opens a bidirectional stream to the peer.
    pub async fn open_bi(&self) -> Result<(SendHalf, RecvHalf), TunnelError> {
        match self {
            TunnelConnection::Quic(c) => {
                let (s, r) = c
                    .open_bi()
                    .await
                    .map_err(|e| TunnelError::Closed(e.to_string()))?;
                Ok((SendHalf::quic(s), RecvHalf::quic(r)))
            }
            TunnelConnection::Mux { conn, .. } => Ok(split_mux(conn.open().await?)),
        }
    }

    /// Accepts the next bidirectional stream the peer opened.
    pub async fn accept_bi(&self) -> Result<(SendHalf, RecvHalf), TunnelError> {
        match self {
            TunnelConnection::Quic(c) => {
                let (s, r) = c
                    .accept_bi()
                    .await
                    .map_err(|e| TunnelError::Closed(e.to_string()))?;
                Ok((SendHalf::quic(s), RecvHalf::quic(r)))
            }
            TunnelConnection::Mux { conn, .. } => conn
                .accept()
                .await
                .map(split_mux)
                .ok_or_else(|| TunnelError::Closed("yamux connection ended".into())),
        }
    }

    /// Closes the connection at once; in-flight streams are aborted.
    pub fn close(&self, reason: &str) {
        match self {
            TunnelConnection::Quic(c) => c.close(quinn::VarInt::from_u32(0), reason.as_bytes()),
            TunnelConnection::Mux { conn, .. } => conn.close(),
        }
    }

    /// Closes the connection and waits (up to `max_wait`) until the close
    /// has left for the peer. A process that exits right after a plain
    /// [`close`](Self::close) may never send it, and its peer then waits out
    /// its keep-alive limit.
    pub async fn close_and_flush(&self, reason: &str, max_wait: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + max_wait;
        match self {
            TunnelConnection::Quic(c) => {
                let sent = c.stats().udp_tx.datagrams;
                self.close(reason);
                // The connection's driver sends CONNECTION_CLOSE when it next runs.
                while c.stats().udp_tx.datagrams == sent && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
            TunnelConnection::Mux { conn, .. } => {
                self.close(reason);
                let _ = tokio::time::timeout_at(deadline, conn.closed()).await;
            }
        }
    }

    /// Resolves once the connection is closed, for whatever reason.
    pub async fn closed(&self) {
        match self {
            TunnelConnection::Quic(c) => {
                c.closed().await;
            }
            TunnelConnection::Mux { conn, .. } => conn.closed().await,
        }
    }

    /// How many datagrams came from the peer so far (QUIC); `None` on TCP,
    /// where a peer that is gone ends the connection.
    pub fn received_datagrams(&self) -> Option<u64> {
        match self {
            TunnelConnection::Quic(c) => Some(c.stats().udp_rx.datagrams),
            TunnelConnection::Mux { .. } => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            TunnelConnection::Quic(c) => c.close_reason().is_some(),
            TunnelConnection::Mux { conn, .. } => conn.is_closed(),
        }
    }
}
