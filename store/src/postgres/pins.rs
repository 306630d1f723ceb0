//! Tool pins of routes.

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{col, pg, PostgresStore};
use crate::changes::Change;
use crate::pins::{PendingChange, Pins, Repinned, ToolPin};
use crate::StoreError;

const PIN_COLUMNS: &str =
    "tool, hash, definition, pinned_at, pending_hash, pending_definition, pending_since";

fn row_to_pin(r: &Row) -> Result<ToolPin, StoreError> {
    let pending_hash: Option<String> = col(r, 4)?;
    let pending_definition: Option<String> = col(r, 5)?;
    let pending_since: Option<i64> = col(r, 6)?;
    Ok(ToolPin {
        tool: col(r, 0)?,
        hash: col(r, 1)?,
        definition: col(r, 2)?,
        pinned_at: col(r, 3)?,
        pending: match (pending_hash, pending_definition, pending_since) {
            (Some(hash), Some(definition), Some(since)) => Some(PendingChange {
                hash,
                definition,
                since,
            }),
            _ => None,
        },
    })
}

fn pins_changed(route: &str) -> Change {
    Change::Pins {
        route: route.to_owned(),
    }
}

impl PostgresStore {
    /// Runs one statement that changes a route's pins; a change is fed only
    /// if it changed a row. True if it did.
    async fn pin_write(
        &self,
        route: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let mut w = self.begin(&mut conn).await?;
        let n = w.tx.execute(sql, params).await.map_err(pg)?;
        if n > 0 {
            w.changed(pins_changed(route));
        }
        self.commit(w).await?;
        Ok(n > 0)
    }
}

#[async_trait::async_trait]
impl Pins for PostgresStore {
    async fn tool_pins(&self, route: &str) -> Result<Vec<ToolPin>, StoreError> {
        let conn = self.conn().await?;
        conn.query(
            &format!("SELECT {PIN_COLUMNS} FROM tool_pins WHERE route = $1 ORDER BY tool"),
            &[&route],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(row_to_pin)
        .collect()
    }

    async fn tool_pin(&self, route: &str, tool: &str) -> Result<Option<ToolPin>, StoreError> {
        let conn = self.conn().await?;
        conn.query_opt(
            &format!("SELECT {PIN_COLUMNS} FROM tool_pins WHERE route = $1 AND tool = $2"),
            &[&route, &tool],
        )
        .await
        .map_err(pg)?
        .as_ref()
        .map(row_to_pin)
        .transpose()
    }

    async fn pin_tool(
        &self,
        route: &str,
        tool: &str,
        hash: &str,
        definition: &str,
    ) -> Result<bool, StoreError> {
        self.pin_write(
            route,
            "INSERT INTO tool_pins (route, tool, hash, definition, pinned_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (route, tool) DO NOTHING",
            &[&route, &tool, &hash, &definition, &crate::now()],
        )
        .await
    }

    async fn note_tool_change(
        &self,
        route: &str,
        tool: &str,
        hash: &str,
        definition: &str,
    ) -> Result<bool, StoreError> {
        self.pin_write(
            route,
            "UPDATE tool_pins SET pending_hash = $3, pending_definition = $4, pending_since = $5
             WHERE route = $1 AND tool = $2 AND hash != $3
               AND (pending_hash IS NULL OR pending_hash != $3)",
            &[&route, &tool, &hash, &definition, &crate::now()],
        )
        .await
    }

    async fn clear_tool_change(
        &self,
        route: &str,
        tool: &str,
        hash: &str,
    ) -> Result<bool, StoreError> {
        self.pin_write(
            route,
            "UPDATE tool_pins SET pending_hash = NULL, pending_definition = NULL, pending_since = NULL
             WHERE route = $1 AND tool = $2 AND hash = $3 AND pending_hash IS NOT NULL",
            &[&route, &tool, &hash],
        )
        .await
    }

    async fn pending_tools(&self, route: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT tool FROM tool_pins WHERE route = $1 AND pending_hash IS NOT NULL ORDER BY tool",
            )
            .await
            .map_err(pg)?;
        conn.query(&stmt, &[&route])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| col(r, 0))
            .collect()
    }

    async fn repin_tool(
        &self,
        route: &str,
        tool: &str,
        hash: &str,
        definition: &str,
    ) -> Result<Option<Repinned>, StoreError> {
        let mut conn = self.conn().await?;
        let mut w = self.begin(&mut conn).await?;
        let old =
            w.tx.query_opt(
                "SELECT hash FROM tool_pins WHERE route = $1 AND tool = $2 FOR UPDATE",
                &[&route, &tool],
            )
            .await
            .map_err(pg)?
            .as_ref()
            .map(|r| col::<String>(r, 0))
            .transpose()?;
        if old.as_deref() == Some(hash) {
            return Ok(None);
        }
        w.tx.execute(
            "INSERT INTO tool_pins (route, tool, hash, definition, pinned_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (route, tool) DO UPDATE SET hash = $3, definition = $4, pinned_at = $5,
               pending_hash = NULL, pending_definition = NULL, pending_since = NULL",
            &[&route, &tool, &hash, &definition, &crate::now()],
        )
        .await
        .map_err(pg)?;
        w.changed(pins_changed(route));
        self.commit(w).await?;
        Ok(Some(Repinned {
            tool: tool.to_owned(),
            old_hash: old.unwrap_or_default(),
            new_hash: hash.to_owned(),
        }))
    }

    async fn approve_tool_changes(
        &self,
        route: &str,
        tool: Option<&str>,
    ) -> Result<Vec<Repinned>, StoreError> {
        let mut conn = self.conn().await?;
        let mut w = self.begin(&mut conn).await?;
        let approved =
            w.tx.query(
                "SELECT tool, hash, pending_hash FROM tool_pins
                 WHERE route = $1 AND ($2::text IS NULL OR tool = $2) AND pending_hash IS NOT NULL
                 ORDER BY tool FOR UPDATE",
                &[&route, &tool],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| {
                Ok(Repinned {
                    tool: col(r, 0)?,
                    old_hash: col(r, 1)?,
                    new_hash: col(r, 2)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        w.tx.execute(
            "UPDATE tool_pins SET hash = pending_hash, definition = pending_definition,
               pinned_at = $3, pending_hash = NULL, pending_definition = NULL, pending_since = NULL
             WHERE route = $1 AND ($2::text IS NULL OR tool = $2) AND pending_hash IS NOT NULL",
            &[&route, &tool, &crate::now()],
        )
        .await
        .map_err(pg)?;
        if !approved.is_empty() {
            w.changed(pins_changed(route));
        }
        self.commit(w).await?;
        Ok(approved)
    }
}
