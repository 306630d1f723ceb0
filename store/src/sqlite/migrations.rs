//! Versioned migrations of the SQLite schema: embedded SQL files and one
//! step in Rust, applied in order inside one `BEGIN IMMEDIATE` transaction
//! (two processes opening the same file at once apply them once), each
//! recorded in `schema_migrations`. A database of a relay from before
//! migrations (no `schema_migrations`) upgrades in place: its tables are
//! those of version 1, made if missing.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::sql_err;
use crate::StoreError;

enum Step {
    Sql(&'static str),
    Rust(fn(&Connection) -> rusqlite::Result<()>),
}

/// Every migration, by version (1, 2, …).
const MIGRATIONS: &[(i64, &str, Step)] = &[
    (
        1,
        "baseline",
        Step::Sql(include_str!("../../migrations/0001_baseline.sql")),
    ),
    (2, "grant resources and prompts", Step::Rust(grant_columns)),
    (
        3,
        "change feed",
        Step::Sql(include_str!("../../migrations/0003_changes.sql")),
    ),
    (
        4,
        "nodes",
        Step::Sql(include_str!("../../migrations/0004_nodes.sql")),
    ),
    (
        5,
        "pending sign-ins",
        Step::Sql(include_str!("../../migrations/0005_sign_ins.sql")),
    ),
    (
        6,
        "secrets and leases",
        Step::Sql(include_str!("../../migrations/0006_secrets.sql")),
    ),
];

/// The newest schema version this program knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Brings the schema up to date. Returns the versions applied.
pub fn migrate(conn: &mut Connection, path: &std::path::Path) -> Result<Vec<i64>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT NOT NULL,
            applied_at INTEGER NOT NULL
        );",
    )
    .map_err(sql_err)?;
    let current: i64 = tx
        .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()
        .map_err(sql_err)?
        .flatten()
        .unwrap_or(0);
    if current > latest() {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: current,
            known: latest(),
        });
    }
    let mut applied = Vec::new();
    for (version, name, step) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        match step {
            Step::Sql(sql) => tx.execute_batch(sql),
            Step::Rust(f) => f(&tx),
        }
        .map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            message: format!("migration {version} ({name}): {e}"),
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![version, name, crate::now()],
        )
        .map_err(sql_err)?;
        applied.push(*version);
    }
    tx.commit().map_err(sql_err)?;
    Ok(applied)
}

/// Version 2: a `route_grants` table of a relay from before grants named
/// resources and prompts gets the columns. Such a grant that named no
/// tools shared everything, and keeps every resource and prompt (`*`); one
/// that named tools gets none, as a grant made now without `--resources`
/// and `--prompts`.
fn grant_columns(conn: &Connection) -> rusqlite::Result<()> {
    let has_resources: bool = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('route_grants') WHERE name = 'resources'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if has_resources {
        return Ok(());
    }
    conn.execute_batch(
        "ALTER TABLE route_grants ADD COLUMN resources TEXT NOT NULL DEFAULT '[]';
         ALTER TABLE route_grants ADD COLUMN prompts TEXT NOT NULL DEFAULT '[]';
         UPDATE route_grants SET resources = '[\"*\"]', prompts = '[\"*\"]' WHERE tools IS NULL;",
    )
}
