//! Shared secrets (the self-signed CA, the ACME certificate and challenges)
//! and leases (one node orders the ACME certificate).

use super::{col, pg, PostgresStore};
use crate::leases::{Lease, Leases};
use crate::secrets::Secrets;
use crate::StoreError;

#[async_trait::async_trait]
impl Secrets for PostgresStore {
    async fn create_secret(&self, name: &str, value: &str) -> Result<String, StoreError> {
        let conn = self.conn().await?;
        // The insert waits for a concurrent one of the same name to commit,
        // then does nothing: the read after it sees the winner's value.
        conn.execute(
            "INSERT INTO secrets (name, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
            &[&name, &value, &crate::now_ms()],
        )
        .await
        .map_err(pg)?;
        let row = conn
            .query_one("SELECT value FROM secrets WHERE name = $1", &[&name])
            .await
            .map_err(pg)?;
        col(&row, 0)
    }

    async fn secret(&self, name: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn().await?;
        conn.query_opt("SELECT value FROM secrets WHERE name = $1", &[&name])
            .await
            .map_err(pg)?
            .map(|r| col(&r, 0))
            .transpose()
    }

    async fn put_secret(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO secrets (name, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value,
                 updated_at = excluded.updated_at",
            &[&name, &value, &crate::now_ms()],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn remove_secret(&self, name: &str) -> Result<bool, StoreError> {
        let conn = self.conn().await?;
        let n = conn
            .execute("DELETE FROM secrets WHERE name = $1", &[&name])
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    async fn secrets_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn().await?;
        conn.query(
            "SELECT name, value FROM secrets WHERE starts_with(name, $1) ORDER BY name",
            &[&prefix],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| Ok((col(r, 0)?, col(r, 1)?)))
        .collect()
    }
}

#[async_trait::async_trait]
impl Leases for PostgresStore {
    async fn take_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        let conn = self.conn().await?;
        let now = crate::now_ms();
        let n = conn
            .execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                     expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
                &[&name, &holder, &(now + ttl_ms), &now],
            )
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.execute(
            "DELETE FROM leases WHERE name = $1 AND holder = $2",
            &[&name, &holder],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let conn = self.conn().await?;
        conn.query_opt(
            "SELECT holder, expires_at FROM leases WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(pg)?
        .map(|r| {
            Ok(Lease {
                holder: col(&r, 0)?,
                expires_at_ms: col(&r, 1)?,
            })
        })
        .transpose()
    }
}
