//! Versioned migrations of the PostgreSQL schema: embedded SQL files,
//! applied in order in one transaction under a transaction advisory lock
//! (nodes starting together: the first applies them, the others wait, then
//! find them applied), each recorded in `schema_migrations`.

use std::path::PathBuf;

use super::{col, pg};
use crate::StoreError;

/// The transaction advisory lock of migrations (an arbitrary constant:
/// "DBRMIGRA").
const MIGRATIONS_LOCK: i64 = 0x4442_524d_4947_5241;

/// Every migration, by version (1, 2, …).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "baseline",
        include_str!("../../migrations/postgres/0001_baseline.sql"),
    ),
    (
        2,
        "nodes",
        include_str!("../../migrations/postgres/0002_nodes.sql"),
    ),
    (
        3,
        "audit_events",
        include_str!("../../migrations/postgres/0003_audit_events.sql"),
    ),
    (
        4,
        "pending sign-ins",
        include_str!("../../migrations/postgres/0004_sign_ins.sql"),
    ),
    (
        5,
        "secrets and leases",
        include_str!("../../migrations/postgres/0005_secrets.sql"),
    ),
];

/// The newest schema version this program knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Brings the schema up to date. Returns the versions applied.
pub async fn migrate(
    conn: &mut deadpool_postgres::Object,
    shown: &str,
) -> Result<Vec<i64>, StoreError> {
    let open = |version: i64, name: &str, e: tokio_postgres::Error| StoreError::Open {
        path: PathBuf::from(shown),
        message: format!("migration {version} ({name}): {}", pg(e)),
    };
    let tx = conn.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATIONS_LOCK])
        .await
        .map_err(pg)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    BIGINT PRIMARY KEY,
            name       TEXT NOT NULL,
            applied_at BIGINT NOT NULL
        )",
    )
    .await
    .map_err(pg)?;
    let current: i64 = col(
        &tx.query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(pg)?,
        0,
    )?;
    if current > latest() {
        return Err(StoreError::TooNew {
            path: PathBuf::from(shown),
            found: current,
            known: latest(),
        });
    }
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| open(*version, name, e))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[version, name, &crate::now()],
        )
        .await
        .map_err(pg)?;
        applied.push(*version);
    }
    tx.commit().await.map_err(pg)?;
    Ok(applied)
}
