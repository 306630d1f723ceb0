//! The store's errors: what went wrong, never which backend's type.

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed (I/O, a locked or corrupt database, a lost
    /// connection); the text is the backend's.
    #[error("state store: {0}")]
    Backend(String),
    /// The store could not be opened.
    #[error("state store {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A stored row that cannot be read back (e.g. an unknown token kind).
    #[error("state store: unreadable record: {0}")]
    Corrupt(String),
    /// A value that already exists (e.g. a device user code in use).
    #[error("state store: {0} already exists")]
    Conflict(String),
    #[error("no token with id {0}")]
    NoSuchToken(String),
    #[error("token {0} is already revoked")]
    AlreadyRevoked(String),
    #[error("a user named {0} already exists")]
    UserExists(String),
    #[error("no user named {0}")]
    NoSuchUser(String),
    /// The backend does not hold this (e.g. the cluster's audit table on
    /// SQLite).
    #[error("state store: {0}")]
    Unsupported(&'static str),
    /// The store's schema is newer than this program knows.
    #[error("state store {path}: schema version {found} is newer than this relay knows ({known}); upgrade the relay")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}
