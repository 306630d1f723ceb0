//! Tool pins of routes.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{changed, SqliteStore};
use crate::changes::Change;
use crate::pins::{PendingChange, Pins, Repinned, ToolPin};
use crate::StoreError;

const PIN_COLUMNS: &str =
    "tool, hash, definition, pinned_at, pending_hash, pending_definition, pending_since";

fn row_to_pin(r: &rusqlite::Row<'_>) -> rusqlite::Result<ToolPin> {
    let pending_hash: Option<String> = r.get(4)?;
    let pending_definition: Option<String> = r.get(5)?;
    let pending_since: Option<i64> = r.get(6)?;
    Ok(ToolPin {
        tool: r.get(0)?,
        hash: r.get(1)?,
        definition: r.get(2)?,
        pinned_at: r.get(3)?,
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

fn pins_changed(c: &rusqlite::Connection, route: &str) -> rusqlite::Result<()> {
    changed(
        c,
        &Change::Pins {
            route: route.to_owned(),
        },
    )
}

/// Runs one statement that changes a route's pins; a change is fed only if
/// it changed a row. True if it did.
fn pin_write(
    c: &mut rusqlite::Connection,
    route: &str,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<bool> {
    let tx = c.transaction()?;
    let n = tx.execute(sql, params)?;
    if n > 0 {
        pins_changed(&tx, route)?;
    }
    tx.commit()?;
    Ok(n > 0)
}

#[async_trait::async_trait]
impl Pins for SqliteStore {
    async fn tool_pins(&self, route: &str) -> Result<Vec<ToolPin>, StoreError> {
        let route = route.to_owned();
        self.run(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {PIN_COLUMNS} FROM tool_pins WHERE route = ?1 ORDER BY tool"
            ))?;
            let rows = stmt.query_map([route], row_to_pin)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn tool_pin(&self, route: &str, tool: &str) -> Result<Option<ToolPin>, StoreError> {
        let (route, tool) = (route.to_owned(), tool.to_owned());
        self.run(move |c| {
            Ok(c.query_row(
                &format!("SELECT {PIN_COLUMNS} FROM tool_pins WHERE route = ?1 AND tool = ?2"),
                [route, tool],
                row_to_pin,
            )
            .optional()?)
        })
        .await
    }

    async fn pin_tool(
        &self,
        route: &str,
        tool: &str,
        hash: &str,
        definition: &str,
    ) -> Result<bool, StoreError> {
        let a = [route, tool, hash, definition].map(str::to_owned);
        self.run(move |c| {
            let [route, tool, hash, definition] = &a;
            Ok(pin_write(
                c,
                route,
                "INSERT INTO tool_pins (route, tool, hash, definition, pinned_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(route, tool) DO NOTHING",
                params![route, tool, hash, definition, crate::now()],
            )?)
        })
        .await
    }

    async fn note_tool_change(
        &self,
        route: &str,
        tool: &str,
        hash: &str,
        definition: &str,
    ) -> Result<bool, StoreError> {
        let a = [route, tool, hash, definition].map(str::to_owned);
        self.run(move |c| {
            let [route, tool, hash, definition] = &a;
            Ok(pin_write(
                c,
                route,
                "UPDATE tool_pins SET pending_hash = ?3, pending_definition = ?4, pending_since = ?5
                 WHERE route = ?1 AND tool = ?2 AND hash != ?3
                   AND (pending_hash IS NULL OR pending_hash != ?3)",
                params![route, tool, hash, definition, crate::now()],
            )?)
        })
        .await
    }

    async fn clear_tool_change(
        &self,
        route: &str,
        tool: &str,
        hash: &str,
    ) -> Result<bool, StoreError> {
        let a = [route, tool, hash].map(str::to_owned);
        self.run(move |c| {
            let [route, tool, hash] = &a;
            Ok(pin_write(
                c,
                route,
                "UPDATE tool_pins SET pending_hash = NULL, pending_definition = NULL, pending_since = NULL
                 WHERE route = ?1 AND tool = ?2 AND hash = ?3 AND pending_hash IS NOT NULL",
                params![route, tool, hash],
            )?)
        })
        .await
    }

    async fn pending_tools(&self, route: &str) -> Result<Vec<String>, StoreError> {
        let route = route.to_owned();
        self.run(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT tool FROM tool_pins WHERE route = ?1 AND pending_hash IS NOT NULL ORDER BY tool",
            )?;
            let rows = stmt.query_map([route], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn repin_tool(
        &self,
        route: &str,
        tool: &str,
        hash: &str,
        definition: &str,
    ) -> Result<Option<Repinned>, StoreError> {
        let a = [route, tool, hash, definition].map(str::to_owned);
        self.run(move |c| {
            let [route, tool, hash, definition] = &a;
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let old: Option<String> = tx
                .query_row(
                    "SELECT hash FROM tool_pins WHERE route = ?1 AND tool = ?2",
                    [route, tool],
                    |r| r.get(0),
                )
                .optional()?;
            if old.as_deref() == Some(hash.as_str()) {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO tool_pins (route, tool, hash, definition, pinned_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(route, tool) DO UPDATE SET hash = ?3, definition = ?4, pinned_at = ?5,
                   pending_hash = NULL, pending_definition = NULL, pending_since = NULL",
                params![route, tool, hash, definition, crate::now()],
            )?;
            pins_changed(&tx, route)?;
            tx.commit()?;
            Ok(Some(Repinned {
                tool: tool.clone(),
                old_hash: old.unwrap_or_default(),
                new_hash: hash.clone(),
            }))
        })
        .await
    }

    async fn approve_tool_changes(
        &self,
        route: &str,
        tool: Option<&str>,
    ) -> Result<Vec<Repinned>, StoreError> {
        let (route, tool) = (route.to_owned(), tool.map(str::to_owned));
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let approved = {
                let mut stmt = tx.prepare(
                    "SELECT tool, hash, pending_hash FROM tool_pins
                     WHERE route = ?1 AND (?2 IS NULL OR tool = ?2) AND pending_hash IS NOT NULL
                     ORDER BY tool",
                )?;
                let rows = stmt.query_map(params![route, tool], |r| {
                    Ok(Repinned {
                        tool: r.get(0)?,
                        old_hash: r.get(1)?,
                        new_hash: r.get(2)?,
                    })
                })?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            tx.execute(
                "UPDATE tool_pins SET hash = pending_hash, definition = pending_definition,
                   pinned_at = ?3, pending_hash = NULL, pending_definition = NULL, pending_since = NULL
                 WHERE route = ?1 AND (?2 IS NULL OR tool = ?2) AND pending_hash IS NOT NULL",
                params![route, tool, crate::now()],
            )?;
            if !approved.is_empty() {
                pins_changed(&tx, &route)?;
            }
            tx.commit()?;
            Ok(approved)
        })
        .await
    }
}
