//! The cluster's audit table: each node's audit events, shipped from its
//! local hash-chained `audit.jsonl` (the relay's `audit::ship`), exactly
//! once per event: a row is keyed by the log it came from and its `seq` in
//! that log's chain, inserting it again changes nothing, and where a log's
//! shipping stands is the highest `seq` stored for it (batches are inserted
//! in order, each in one transaction, so there is no gap below it).
//!
//! PostgreSQL only: a single relay on SQLite has one audit log, its local
//! files, which `relay audit` reads; a copy in the same state directory
//! would add a write per event and nothing to query. The SQLite backend
//! answers [`StoreError::Unsupported`].

use crate::StoreError;

/// One audit event as the cluster table holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShippedEvent {
    /// The audit log it came from: the id of the node's state directory
    /// (stable across restarts, unlike the node's process id).
    pub node: String,
    /// Its number in that log's hash chain.
    pub seq: i64,
    /// Its `hash` in the chain.
    pub hash: String,
    /// RFC 3339 time the request arrived.
    pub time: String,
    /// The same, in Unix milliseconds (for `since`).
    pub time_ms: i64,
    pub request_id: String,
    pub route: String,
    pub decision: String,
    /// The whole line, a JSON object.
    pub line: String,
}

/// A filter on the cluster's audit events (as `relay audit`'s).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    pub route: Option<String>,
    pub decision: Option<String>,
    /// Only events at or after this time (Unix milliseconds).
    pub since_ms: Option<i64>,
}

/// The cluster's audit table.
#[async_trait::async_trait]
pub trait AuditEvents: Send + Sync {
    /// Stores `events` (of any logs) in one transaction; an event already
    /// stored (same node and seq) is left as it is. Returns how many were
    /// new.
    async fn ship_audit_events(&self, events: &[ShippedEvent]) -> Result<u64, StoreError>;

    /// The highest `seq` stored for `node`'s log (0: none).
    async fn audit_shipped_up_to(&self, node: &str) -> Result<i64, StoreError>;

    /// The `hash` stored for the event `seq` of `node`'s log (`None`: not
    /// stored): whether a local log is still the one shipped under its id.
    async fn audit_shipped_hash(&self, node: &str, seq: i64) -> Result<Option<String>, StoreError>;

    /// The events that match `filter`, oldest first (by time, then node
    /// and seq).
    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<ShippedEvent>, StoreError>;
}
