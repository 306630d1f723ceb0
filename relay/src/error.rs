//! The relay library's errors.

use std::path::PathBuf;

/// Errors that stop the relay from starting or a command from completing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    #[error("state store {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state store: {0}")]
    Sql(#[from] rusqlite::Error),
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
    #[error("no token with id {0}")]
    NoSuchToken(String),
    #[error("token {0} is already revoked")]
    AlreadyRevoked(String),
    #[error("a user named {0} already exists")]
    UserExists(String),
    #[error("no user named {0}")]
    NoSuchUser(String),
    #[error("password hashing: {0}")]
    Password(String),
}
