//! Shared secrets and leases (a single relay on SQLite keeps its
//! certificates in the state directory; these serve the conformance suite
//! and tools).

use rusqlite::{params, OptionalExtension};

use super::SqliteStore;
use crate::leases::{Lease, Leases};
use crate::secrets::Secrets;
use crate::StoreError;

#[async_trait::async_trait]
impl Secrets for SqliteStore {
    async fn create_secret(&self, name: &str, value: &str) -> Result<String, StoreError> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.run(move |c| {
            c.execute(
                "INSERT INTO secrets (name, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO NOTHING",
                params![name, value, crate::now_ms()],
            )?;
            Ok(c.query_row(
                "SELECT value FROM secrets WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )?)
        })
        .await
    }

    async fn secret(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name = name.to_owned();
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT value FROM secrets WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn put_secret(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.run(move |c| {
            c.execute(
                "INSERT INTO secrets (name, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value,
                     updated_at = excluded.updated_at",
                params![name, value, crate::now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    async fn remove_secret(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.run(move |c| Ok(c.execute("DELETE FROM secrets WHERE name = ?1", params![name])? > 0))
            .await
    }

    async fn secrets_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let prefix = prefix.to_owned();
        self.run(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT name, value FROM secrets WHERE substr(name, 1, length(?1)) = ?1
                 ORDER BY name",
            )?;
            let rows = stmt.query_map(params![prefix], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

#[async_trait::async_trait]
impl Leases for SqliteStore {
    async fn take_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.run(move |c| {
            let now = crate::now_ms();
            let n = c.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET holder = excluded.holder,
                     expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at < ?4",
                params![name, holder, now + ttl_ms, now],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.run(move |c| {
            c.execute(
                "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
                params![name, holder],
            )?;
            Ok(())
        })
        .await
    }

    async fn lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let name = name.to_owned();
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT holder, expires_at FROM leases WHERE name = ?1",
                params![name],
                |r| {
                    Ok(Lease {
                        holder: r.get(0)?,
                        expires_at_ms: r.get(1)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }
}
