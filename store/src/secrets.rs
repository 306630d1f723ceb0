//! Secrets a cluster shares (several relays on one database): the
//! self-signed CA and its key, the ACME account, certificate and key, and
//! the pending TLS-ALPN-01 challenge certificates. Each is a named text
//! value (PEM or JSON). A single relay on SQLite keeps these in its state
//! directory instead and leaves the table empty.
//!
//! Keys stored here are as sensitive as the state directory's files: whoever
//! can read the database can impersonate the relay.

use crate::StoreError;

/// Named secret values shared by every node.
#[async_trait::async_trait]
pub trait Secrets: Send + Sync {
    /// Stores `value` under `name` unless a value is stored there already,
    /// atomically: of several nodes creating the same name at once, one
    /// wins. Returns the value stored (`value`, or the earlier one).
    async fn create_secret(&self, name: &str, value: &str) -> Result<String, StoreError>;

    /// The value stored under `name`.
    async fn secret(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Stores `value` under `name`, replacing what was there.
    async fn put_secret(&self, name: &str, value: &str) -> Result<(), StoreError>;

    /// Removes `name`. True if it was stored.
    async fn remove_secret(&self, name: &str) -> Result<bool, StoreError>;

    /// Every secret whose name starts with `prefix`, by name.
    async fn secrets_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError>;
}
