//! Messages on the control stream (the handshake stream, after the handshake).

use serde::{Deserialize, Serialize};

/// A control message. Either side may send any of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Liveness probe; the peer answers with [`Control::Pong`] and the same nonce.
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// The sender will open or accept no new exchanges on this connection.
    /// In-flight exchanges finish. The agent reconnects (possibly at once) if
    /// `reconnect` is true, and stops with `message` if not.
    GoAway {
        reason: GoAwayReason,
        reconnect: bool,
        message: String,
    },
    /// Relay to agent, version 6 and later only (an older agent does not
    /// decode it and is never sent it): the addresses (`HOST:PORT`) of the
    /// live relay nodes of the cluster, `this` among them being the node
    /// that sends it. Sent after the welcome and whenever the set changes.
    /// The agent holds one session per node (up to its
    /// `--relay-connections`), dialling each address with the relay's TLS
    /// name and the same credential.
    Nodes {
        this: String,
        addresses: Vec<String>,
    },
}

/// Why a connection is going away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GoAwayReason {
    /// The relay is restarting or shutting down.
    Shutdown,
    /// The agent is stopping (Ctrl-C).
    AgentLeaving,
    /// The agent's credential was revoked or expired.
    CredentialRevoked,
    /// The agent moved to a better connection (QUIC after TCP).
    Replaced,
}
