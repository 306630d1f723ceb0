//! The cluster's audit table.

use tokio_postgres::Row;

use super::{col, pg, PostgresStore};
use crate::audit::{AuditEvents, AuditFilter, ShippedEvent};
use crate::StoreError;

fn row_to_event(r: &Row) -> Result<ShippedEvent, StoreError> {
    Ok(ShippedEvent {
        node: col(r, 0)?,
        seq: col(r, 1)?,
        hash: col(r, 2)?,
        time: col(r, 3)?,
        time_ms: col(r, 4)?,
        request_id: col(r, 5)?,
        route: col(r, 6)?,
        decision: col(r, 7)?,
        line: col(r, 8)?,
    })
}

#[async_trait::async_trait]
impl AuditEvents for PostgresStore {
    async fn ship_audit_events(&self, events: &[ShippedEvent]) -> Result<u64, StoreError> {
        if events.is_empty() {
            return Ok(0);
        }
        let column = |f: fn(&ShippedEvent) -> &str| events.iter().map(f).collect::<Vec<_>>();
        let nodes = column(|e| &e.node);
        let hashes = column(|e| &e.hash);
        let times = column(|e| &e.time);
        let request_ids = column(|e| &e.request_id);
        let routes = column(|e| &e.route);
        let decisions = column(|e| &e.decision);
        let lines = column(|e| &e.line);
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        let times_ms: Vec<i64> = events.iter().map(|e| e.time_ms).collect();
        let conn = self.conn().await?;
        // One statement: one transaction, all or nothing.
        let n = conn
            .execute(
                "INSERT INTO audit_events
                     (node, seq, hash, time, time_ms, request_id, route, decision, line)
                 SELECT node, seq, hash, time, time_ms, request_id, route, decision, line::json
                 FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                             $6::text[], $7::text[], $8::text[], $9::text[])
                      AS e(node, seq, hash, time, time_ms, request_id, route, decision, line)
                 ON CONFLICT (node, seq) DO NOTHING",
                &[
                    &nodes,
                    &seqs,
                    &hashes,
                    &times,
                    &times_ms,
                    &request_ids,
                    &routes,
                    &decisions,
                    &lines,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(n)
    }

    async fn audit_shipped_up_to(&self, node: &str) -> Result<i64, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .query_one(
                "SELECT COALESCE(MAX(seq), 0) FROM audit_events WHERE node = $1",
                &[&node],
            )
            .await
            .map_err(pg)?;
        col(&row, 0)
    }

    async fn audit_shipped_hash(&self, node: &str, seq: i64) -> Result<Option<String>, StoreError> {
        let conn = self.conn().await?;
        conn.query_opt(
            "SELECT hash FROM audit_events WHERE node = $1 AND seq = $2",
            &[&node, &seq],
        )
        .await
        .map_err(pg)?
        .map(|row| col(&row, 0))
        .transpose()
    }

    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<ShippedEvent>, StoreError> {
        let conn = self.conn().await?;
        conn.query(
            "SELECT node, seq, hash, time, time_ms, request_id, route, decision, line::text
             FROM audit_events
             WHERE ($1::text IS NULL OR route = $1)
               AND ($2::text IS NULL OR decision = $2)
               AND ($3::bigint IS NULL OR time_ms >= $3)
             ORDER BY time_ms, node, seq",
            &[&filter.route, &filter.decision, &filter.since_ms],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(row_to_event)
        .collect()
    }
}
