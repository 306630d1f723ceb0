//! Agent and client tokens, route claims.

use std::time::Duration;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{changed, SqliteStore};
use crate::changes::Change;
use crate::token::{self, Secret, TokenKind};
use crate::tokens::{RouteClaim, TokenRecord, Tokens};
use crate::StoreError;

const TOKEN_COLUMNS: &str =
    "id, kind, owner, name, created_at, expires_at, last_used_at, revoked_at, replaced_by";

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    let kind: String = r.get(1)?;
    Ok(TokenRecord {
        id: r.get(0)?,
        kind: TokenKind::parse(&kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                format!("unknown token kind {kind:?}").into(),
            )
        })?,
        owner: r.get(2)?,
        name: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        last_used_at: r.get(6)?,
        revoked_at: r.get(7)?,
        replaced_by: r.get(8)?,
    })
}

fn token_by_id(c: &rusqlite::Connection, id: &str) -> rusqlite::Result<Option<TokenRecord>> {
    c.query_row(
        &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"),
        [id],
        row_to_record,
    )
    .optional()
}

fn insert_token(
    c: &rusqlite::Connection,
    kind: TokenKind,
    owner: &str,
    name: &str,
    expires_at: Option<i64>,
) -> rusqlite::Result<(TokenRecord, Secret)> {
    let secret = Secret::generate(kind);
    let record = TokenRecord {
        id: token::random_hex(6),
        kind,
        owner: owner.to_owned(),
        name: name.to_owned(),
        created_at: crate::now(),
        expires_at,
        last_used_at: None,
        revoked_at: None,
        replaced_by: None,
    };
    c.execute(
        "INSERT INTO tokens (id, kind, owner, name, secret_hash, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            record.id,
            kind.as_str(),
            record.owner,
            record.name,
            token::hash(secret.expose()),
            record.created_at,
            record.expires_at
        ],
    )?;
    changed(
        c,
        &Change::Token {
            id: record.id.clone(),
        },
    )?;
    Ok((record, secret))
}

#[async_trait::async_trait]
impl Tokens for SqliteStore {
    async fn create_token(
        &self,
        kind: TokenKind,
        owner: &str,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<(TokenRecord, Secret), StoreError> {
        let (owner, name) = (owner.to_owned(), name.to_owned());
        self.run(move |c| {
            let tx = c.transaction()?;
            let made = insert_token(&tx, kind, &owner, &name, expires_at)?;
            tx.commit()?;
            Ok(made)
        })
        .await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.run(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY rowid"
            ))?;
            let rows = stmt.query_map([], row_to_record)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let id = id.to_owned();
        self.run(move |c| Ok(token_by_id(c, &id)?)).await
    }

    async fn token_by_secret(&self, presented: &str) -> Result<Option<TokenRecord>, StoreError> {
        let hash = token::hash(presented);
        self.run(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE secret_hash = ?1"
            ))
            .and_then(|mut stmt| stmt.query_row([hash], row_to_record))
            .optional()?)
        })
        .await
    }

    async fn touch_token(&self, id: &str, at: i64) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            c.prepare_cached("UPDATE tokens SET last_used_at = ?2 WHERE id = ?1")?
                .execute(params![id, at])?;
            Ok(())
        })
        .await
    }

    async fn revoke_token(&self, id: &str) -> Result<TokenRecord, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let record =
                token_by_id(&tx, &id)?.ok_or_else(|| StoreError::NoSuchToken(id.clone()))?;
            if record.revoked_at.is_some() {
                return Err(StoreError::AlreadyRevoked(id).into());
            }
            tx.execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1",
                params![id, crate::now()],
            )?;
            changed(&tx, &Change::Token { id: id.clone() })?;
            let revoked =
                token_by_id(&tx, &id)?.ok_or_else(|| StoreError::NoSuchToken(id.clone()))?;
            tx.commit()?;
            Ok(revoked)
        })
        .await
    }

    async fn rotate_token(
        &self,
        id: &str,
        grace: Duration,
        expires_at: Option<i64>,
    ) -> Result<(TokenRecord, Secret), StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let old = token_by_id(&tx, &id)?.ok_or_else(|| StoreError::NoSuchToken(id.clone()))?;
            if old.revoked_at.is_some() {
                return Err(StoreError::AlreadyRevoked(id).into());
            }
            let (new, secret) = insert_token(&tx, old.kind, &old.owner, &old.name, expires_at)?;
            let grace_end = crate::now() + grace.as_secs() as i64;
            let old_expiry = match old.expires_at {
                Some(t) => t.min(grace_end),
                None => grace_end,
            };
            tx.execute(
                "UPDATE tokens SET expires_at = ?2, replaced_by = ?3 WHERE id = ?1",
                params![id, old_expiry, new.id],
            )?;
            changed(&tx, &Change::Token { id })?;
            tx.commit()?;
            Ok((new, secret))
        })
        .await
    }

    async fn claim_route(
        &self,
        name: &str,
        owner: &str,
        max: u32,
    ) -> Result<RouteClaim, StoreError> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut current: Option<String> = tx
                .query_row("SELECT owner FROM routes WHERE name = ?1", [&name], |r| {
                    r.get(0)
                })
                .optional()?;
            if current.is_none() {
                if max > 0 {
                    let held: i64 = tx.query_row(
                        "SELECT COUNT(*) FROM routes WHERE owner = ?1",
                        [&owner],
                        |r| r.get(0),
                    )?;
                    if held >= i64::from(max) {
                        return Ok(RouteClaim::TooMany { max });
                    }
                }
                tx.execute(
                    "INSERT INTO routes (name, owner, created_at) VALUES (?1, ?2, ?3)",
                    params![name, owner, crate::now()],
                )?;
                // Released by another process and claimed again: nothing
                // kept of the previous owner's may be used.
                changed(&tx, &Change::Route { name: name.clone() })?;
                changed(
                    &tx,
                    &Change::Grants {
                        route: name.clone(),
                    },
                )?;
                current = Some(owner.clone());
            }
            tx.commit()?;
            let current = current.unwrap_or_default();
            Ok(if current == owner {
                RouteClaim::Granted
            } else {
                RouteClaim::Taken { owner: current }
            })
        })
        .await
    }

    async fn route_owner(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name = name.to_owned();
        self.run(move |c| {
            Ok(c.prepare_cached("SELECT owner FROM routes WHERE name = ?1")
                .and_then(|mut stmt| stmt.query_row([name], |r| r.get(0)))
                .optional()?)
        })
        .await
    }

    async fn list_routes(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.run(|c| {
            let mut stmt = c.prepare("SELECT name, owner FROM routes ORDER BY name")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn release_route(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM tool_pins WHERE route = ?1", [&name])?;
            tx.execute("DELETE FROM route_grants WHERE route = ?1", [&name])?;
            let released = tx.execute("DELETE FROM routes WHERE name = ?1", [&name])? > 0;
            for change in [
                Change::Route { name: name.clone() },
                Change::Grants {
                    route: name.clone(),
                },
                Change::Pins {
                    route: name.clone(),
                },
            ] {
                changed(&tx, &change)?;
            }
            tx.commit()?;
            Ok(released)
        })
        .await
    }
}
