//! The agent's errors.

use protocol::Refusal;

/// Why `agent connect` stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("the relay refused this agent: {}", .0.message)]
    Refused(Refusal),
    #[error("the relay disconnected this agent: {0}")]
    Disconnected(String),
    #[error("invalid relay URL {url:?}: {reason}")]
    RelayUrl { url: String, reason: String },
    #[error("invalid upstream URL {url:?}: {reason}")]
    UpstreamUrl { url: String, reason: String },
    #[error(transparent)]
    Tunnel(#[from] tunnel::TunnelError),
    #[cfg(feature = "embedded-relay")]
    #[error(transparent)]
    Relay(#[from] relay::RelayError),
    #[error("{0}")]
    Config(String),
    /// `agent login` or `agent share` could not do what was asked.
    #[error("{0}")]
    Api(String),
    /// The credentials file (`agent login`) cannot be read or written.
    #[error("credentials file {path}: {reason}")]
    Credentials { path: String, reason: String },
}

/// Why one attempt to reach the relay failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("quic: {0}")]
    Quic(String),
    #[error("tcp: {0}")]
    Tcp(String),
    #[error("{quic}; {tcp}")]
    Both { quic: String, tcp: String },
}
