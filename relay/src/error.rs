//! The relay library's errors.

use std::path::PathBuf;

/// Errors that stop the relay from starting or a command from completing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] ::store::StoreError),
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Certificate(String),
    #[error("TLS certificate: {0}")]
    TlsCertificate(String),
    #[error("reload: {0}")]
    Reload(String),
    #[error(transparent)]
    Tunnel(#[from] tunnel::TunnelError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("password hashing: {0}")]
    Password(String),
}
