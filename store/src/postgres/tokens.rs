//! Agent and client tokens, route claims.

use std::time::Duration;

use tokio_postgres::{GenericClient, Row};

use super::{col, pg, PostgresStore, Write};
use crate::changes::Change;
use crate::token::{self, Secret, TokenKind};
use crate::tokens::{RouteClaim, TokenRecord, Tokens};
use crate::StoreError;

const TOKEN_COLUMNS: &str =
    "id, kind, owner, name, created_at, expires_at, last_used_at, revoked_at, replaced_by";

fn row_to_record(r: &Row) -> Result<TokenRecord, StoreError> {
    let kind: String = col(r, 1)?;
    Ok(TokenRecord {
        id: col(r, 0)?,
        kind: TokenKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown token kind {kind:?}")))?,
        owner: col(r, 2)?,
        name: col(r, 3)?,
        created_at: col(r, 4)?,
        expires_at: col(r, 5)?,
        last_used_at: col(r, 6)?,
        revoked_at: col(r, 7)?,
        replaced_by: col(r, 8)?,
    })
}

/// One token by id; `lock`: `FOR UPDATE` (in a transaction).
async fn token_by_id(
    c: &impl GenericClient,
    id: &str,
    lock: bool,
) -> Result<Option<TokenRecord>, StoreError> {
    let sql = format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    c.query_opt(&sql, &[&id])
        .await
        .map_err(pg)?
        .as_ref()
        .map(row_to_record)
        .transpose()
}

async fn insert_token(
    w: &mut Write<'_>,
    kind: TokenKind,
    owner: &str,
    name: &str,
    expires_at: Option<i64>,
) -> Result<(TokenRecord, Secret), StoreError> {
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
    w.tx.execute(
        "INSERT INTO tokens (id, kind, owner, name, secret_hash, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &record.id,
            &kind.as_str(),
            &record.owner,
            &record.name,
            &token::hash(secret.expose()),
            &record.created_at,
            &record.expires_at,
        ],
    )
    .await
    .map_err(pg)?;
    w.changed(Change::Token {
        id: record.id.clone(),
    });
    Ok((record, secret))
}

#[async_trait::async_trait]
impl Tokens for PostgresStore {
    async fn create_token(
        &self,
        kind: TokenKind,
        owner: &str,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<(TokenRecord, Secret), StoreError> {
        let mut conn = self.conn().await?;
        let mut w = self.begin(&mut conn).await?;
        let made = insert_token(&mut w, kind, owner, name, expires_at).await?;
        self.commit(w).await?;
        Ok(made)
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let conn = self.conn().await?;
        conn.query(
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY n"),
            &[],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(row_to_record)
        .collect()
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let conn = self.conn().await?;
        token_by_id(&**conn, id, false).await
    }

    async fn token_by_secret(&self, presented: &str) -> Result<Option<TokenRecord>, StoreError> {
        let hash = token::hash(presented);
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE secret_hash = $1"
            ))
            .await
            .map_err(pg)?;
        conn.query_opt(&stmt, &[&hash])
            .await
            .map_err(pg)?
            .as_ref()
            .map(row_to_record)
            .transpose()
    }

    async fn touch_token(&self, id: &str, at: i64) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached("UPDATE tokens SET last_used_at = $2 WHERE id = $1")
            .await
            .map_err(pg)?;
        conn.execute(&stmt, &[&id, &at]).await.map_err(pg)?;
        Ok(())
    }

    async fn revoke_token(&self, id: &str) -> Result<TokenRecord, StoreError> {
        let mut conn = self.conn().await?;
        let mut w = self.begin(&mut conn).await?;
        let record = token_by_id(&*w.tx, id, true)
            .await?
            .ok_or_else(|| StoreError::NoSuchToken(id.to_owned()))?;
        if record.revoked_at.is_some() {
            return Err(StoreError::AlreadyRevoked(id.to_owned()));
        }
        let now = crate::now();
        w.tx.execute(
            "UPDATE tokens SET revoked_at = $2 WHERE id = $1",
            &[&id, &now],
        )
        .await
        .map_err(pg)?;
        w.changed(Change::Token { id: id.to_owned() });
        self.commit(w).await?;
        Ok(TokenRecord {
            revoked_at: Some(now),
            ..record
        })
    }

    async fn rotate_token(
        &self,
        id: &str,
        grace: Duration,
        expires_at: Option<i64>,
    ) -> Result<(TokenRecord, Secret), StoreError> {
        let mut conn = self.conn().await?;
        let mut w = self.begin(&mut conn).await?;
        let old = token_by_id(&*w.tx, id, true)
            .await?
            .ok_or_else(|| StoreError::NoSuchToken(id.to_owned()))?;
        if old.revoked_at.is_some() {
            return Err(StoreError::AlreadyRevoked(id.to_owned()));
        }
        let (new, secret) =
            insert_token(&mut w, old.kind, &old.owner, &old.name, expires_at).await?;
        let grace_end = crate::now() + grace.as_secs() as i64;
        let old_expiry = match old.expires_at {
            Some(t) => t.min(grace_end),
            None => grace_end,
        };
        w.tx.execute(
            "UPDATE tokens SET expires_at = $2, replaced_by = $3 WHERE id = $1",
            &[&id, &old_expiry, &new.id],
        )
        .await
        .map_err(pg)?;
        w.changed(Change::Token { id: id.to_owned() });
        self.commit(w).await?;
        Ok((new, secret))
    }

    async fn claim_route(
        &self,
        name: &str,
        owner: &str,
        max: u32,
    ) -> Result<RouteClaim, StoreError> {
        let mut conn = self.conn().await?;
        let mut w = self.begin(&mut conn).await?;
        // Claims by one owner one at a time (on every node): counting and
        // claiming cannot pass the cap.
        w.tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('route-owner:' || $1, 0))",
            &[&owner],
        )
        .await
        .map_err(pg)?;
        let owner_of = |row: Option<Row>| row.as_ref().map(|r| col::<String>(r, 0)).transpose();
        let mut current = owner_of(
            w.tx.query_opt("SELECT owner FROM routes WHERE name = $1", &[&name])
                .await
                .map_err(pg)?,
        )?;
        if current.is_none() {
            if max > 0 {
                let held: i64 = col(
                    &w.tx
                        .query_one("SELECT COUNT(*) FROM routes WHERE owner = $1", &[&owner])
                        .await
                        .map_err(pg)?,
                    0,
                )?;
                if held >= i64::from(max) {
                    return Ok(RouteClaim::TooMany { max });
                }
            }
            let inserted =
                w.tx.execute(
                    "INSERT INTO routes (name, owner, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO NOTHING",
                    &[&name, &owner, &crate::now()],
                )
                .await
                .map_err(pg)?;
            if inserted == 1 {
                // Released elsewhere and claimed again: nothing kept of the
                // previous owner's may be used.
                w.changed(Change::Route {
                    name: name.to_owned(),
                });
                w.changed(Change::Grants {
                    route: name.to_owned(),
                });
                current = Some(owner.to_owned());
            } else {
                // Claimed by another owner meanwhile.
                current = owner_of(
                    w.tx.query_opt("SELECT owner FROM routes WHERE name = $1", &[&name])
                        .await
                        .map_err(pg)?,
                )?;
            }
        }
        self.commit(w).await?;
        let current = current.unwrap_or_default();
        Ok(if current == owner {
            RouteClaim::Granted
        } else {
            RouteClaim::Taken { owner: current }
        })
    }

    async fn route_owner(&self, name: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached("SELECT owner FROM routes WHERE name = $1")
            .await
            .map_err(pg)?;
        conn.query_opt(&stmt, &[&name])
            .await
            .map_err(pg)?
            .as_ref()
            .map(|r| col(r, 0))
            .transpose()
    }

    async fn list_routes(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn().await?;
        conn.query("SELECT name, owner FROM routes ORDER BY name", &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| Ok((col(r, 0)?, col(r, 1)?)))
            .collect()
    }

    async fn release_route(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let mut w = self.begin(&mut conn).await?;
        w.tx.execute("DELETE FROM tool_pins WHERE route = $1", &[&name])
            .await
            .map_err(pg)?;
        w.tx.execute("DELETE FROM route_grants WHERE route = $1", &[&name])
            .await
            .map_err(pg)?;
        let released =
            w.tx.execute("DELETE FROM routes WHERE name = $1", &[&name])
                .await
                .map_err(pg)?
                > 0;
        for change in [
            Change::Route {
                name: name.to_owned(),
            },
            Change::Grants {
                route: name.to_owned(),
            },
            Change::Pins {
                route: name.to_owned(),
            },
        ] {
            w.changed(change);
        }
        self.commit(w).await?;
        Ok(released)
    }
}
