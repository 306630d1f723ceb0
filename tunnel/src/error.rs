//! Errors of the tunnel transports.

use std::io;

/// A transport-level failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    #[error("tls: {0}")]
    Tls(String),
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("no usable {what} in {path}")]
    NoPem { what: &'static str, path: String },
    #[error("quic: {0}")]
    Quic(String),
    #[error("the tunnel connection is closed: {0}")]
    Closed(String),
    #[error("the peer did not negotiate the drawbridge tunnel protocol (ALPN {got:?})")]
    WrongAlpn { got: Option<String> },
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}
