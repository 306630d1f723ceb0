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

    /// Resolves once the connection is closed, for whatever reason.
    pub async fn closed(&self) {
        match self {
            TunnelConnection::Quic(c) => {
                c.closed().await;
            }
            TunnelConnection::Mux { conn, .. } => conn.closed().await,
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            TunnelConnection::Quic(c) => c.close_reason().is_some(),
            TunnelConnection::Mux { conn, .. } => conn.is_closed(),
        }
    }
}
