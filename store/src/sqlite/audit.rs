//! The cluster's audit table: not on SQLite (one relay, whose audit is its
//! local files; see [`crate::audit`]).

use super::SqliteStore;
use crate::audit::{AuditEvents, AuditFilter, ShippedEvent};
use crate::StoreError;

const UNSUPPORTED: &str = "the cluster's audit table needs PostgreSQL (--database-url); \
                           a relay on SQLite keeps its audit in the state directory's files";

#[async_trait::async_trait]
impl AuditEvents for SqliteStore {
    async fn ship_audit_events(&self, _: &[ShippedEvent]) -> Result<u64, StoreError> {
        Err(StoreError::Unsupported(UNSUPPORTED))
    }

    async fn audit_shipped_up_to(&self, _: &str) -> Result<i64, StoreError> {
        Err(StoreError::Unsupported(UNSUPPORTED))
    }

    async fn audit_shipped_hash(&self, _: &str, _: i64) -> Result<Option<String>, StoreError> {
        Err(StoreError::Unsupported(UNSUPPORTED))
    }

    async fn audit_events(&self, _: &AuditFilter) -> Result<Vec<ShippedEvent>, StoreError> {
        Err(StoreError::Unsupported(UNSUPPORTED))
    }
}
