//! Leases: one node of a cluster at a time does a job (ordering the ACME
//! certificate). A lease has a holder and an expiry; the holder renews it
//! while it lives, and once it has expired (its holder died) another node
//! takes it. Times are Unix milliseconds ([`crate::now_ms`]).

use crate::StoreError;

/// Who holds a lease, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub expires_at_ms: i64,
}

/// Named leases shared by every node.
#[async_trait::async_trait]
pub trait Leases: Send + Sync {
    /// Takes lease `name` for `holder` for `ttl_ms` from now if it is free,
    /// expired or already `holder`'s (a renewal), atomically: of several
    /// nodes taking it at once, one wins. True if `holder` holds it now.
    async fn take_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, StoreError>;

    /// Gives lease `name` up if `holder` holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Who holds lease `name` (expired or not), if anyone.
    async fn lease(&self, name: &str) -> Result<Option<Lease>, StoreError>;
}
