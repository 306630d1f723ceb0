//! The OAuth authorization server's state.

use tokio_postgres::{GenericClient, Row};

use super::{col, pg, PostgresStore, Write};
use crate::changes::Change;
use crate::oauth::{
    AuthCode, CodeCheck, CodeRedemption, DevicePoll, DeviceRequest, Grant, IssuedTokens, OAuth,
    OAuthClient, OAuthToken, OAuthTokenKind, RefreshCheck, RefreshOutcome, RefreshVerdict, Session,
    TokenTtl, ACCESS_PREFIX, REFRESH_PREFIX,
};
use crate::token;
use crate::StoreError;

const OAUTH_TOKEN_COLUMNS: &str =
    "id, kind, family, client_id, email, resource, scope, expires_at, revoked_at, rotated_at";

fn row_to_oauth_token(r: &Row) -> Result<OAuthToken, StoreError> {
    let kind: String = col(r, 1)?;
    Ok(OAuthToken {
        id: col(r, 0)?,
        kind: if kind == "access" {
            OAuthTokenKind::Access
        } else {
            OAuthTokenKind::Refresh
        },
        family: col(r, 2)?,
        client_id: col(r, 3)?,
        email: col(r, 4)?,
        resource: col(r, 5)?,
        scope: col(r, 6)?,
        expires_at: col(r, 7)?,
        revoked_at: col(r, 8)?,
        rotated_at: col(r, 9)?,
    })
}

/// Takes the family's transaction advisory lock: writes to a family's
/// tokens take it before any row lock (so that two exchanges in one family,
/// or an exchange and a revocation, queue instead of deadlocking).
async fn lock_family(w: &Write<'_>, family: &str) -> Result<(), StoreError> {
    w.tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('oauth-family:' || $1, 0))",
        &[&family],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

async fn revoke_family(w: &mut Write<'_>, family: &str, now: i64) -> Result<(), StoreError> {
    lock_family(w, family).await?;
    w.tx.execute(
        "UPDATE oauth_tokens SET revoked_at = $2 WHERE family = $1 AND revoked_at IS NULL",
        &[&family, &now],
    )
    .await
    .map_err(pg)?;
    w.changed(Change::OAuthFamily {
        family: family.to_owned(),
    });
    Ok(())
}

/// Inserts an access and a refresh token for `grant` (in the caller's
/// transaction).
async fn issue(
    c: &impl GenericClient,
    grant: &Grant<'_>,
    ttl: TokenTtl,
) -> Result<IssuedTokens, StoreError> {
    let now = crate::now();
    let access = format!("{ACCESS_PREFIX}{}", token::random_hex(32));
    let refresh = format!("{REFRESH_PREFIX}{}", token::random_hex(32));
    for (kind, secret, ttl) in [
        (OAuthTokenKind::Access, &access, ttl.access),
        (OAuthTokenKind::Refresh, &refresh, ttl.refresh),
    ] {
        c.execute(
            "INSERT INTO oauth_tokens (id, secret_hash, kind, family, client_id, email,
                                       resource, scope, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &token::random_hex(6),
                &token::hash(secret),
                &kind.as_str(),
                &grant.family,
                &grant.client_id,
                &grant.email,
                &grant.resource,
                &grant.scope,
                &now,
                &(now + ttl),
            ],
        )
        .await
        .map_err(pg)?;
    }
    Ok(IssuedTokens {
        access_token: access,
        refresh_token: refresh,
        expires_in: ttl.access,
        scope: grant.scope.to_owned(),
    })
}

fn client_json(client: &OAuthClient) -> Result<String, StoreError> {
    serde_json::to_string(&client.redirect_uris).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[async_trait::async_trait]
impl OAuth for PostgresStore {
    async fn insert_client(&self, client: &OAuthClient) -> Result<(), StoreError> {
        let uris = client_json(client)?;
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO oauth_clients (client_id, client_name, redirect_uris, created_at)
             VALUES ($1, $2, $3, $4)",
            &[
                &client.client_id,
                &client.client_name,
                &uris,
                &client.created_at,
            ],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn upsert_client(&self, client: &OAuthClient) -> Result<(), StoreError> {
        let uris = client_json(client)?;
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO oauth_clients (client_id, client_name, redirect_uris, created_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (client_id) DO UPDATE SET client_name = $2, redirect_uris = $3,
                 created_at = $4",
            &[
                &client.client_id,
                &client.client_name,
                &uris,
                &client.created_at,
            ],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn client(&self, client_id: &str) -> Result<Option<OAuthClient>, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                "SELECT client_id, client_name, redirect_uris, created_at
                 FROM oauth_clients WHERE client_id = $1",
                &[&client_id],
            )
            .await
            .map_err(pg)?;
        let Some(r) = row else {
            return Ok(None);
        };
        let uris: String = col(&r, 2)?;
        Ok(Some(OAuthClient {
            client_id: col(&r, 0)?,
            client_name: col(&r, 1)?,
            redirect_uris: serde_json::from_str(&uris).unwrap_or_default(),
            created_at: col(&r, 3)?,
        }))
    }

    async fn consent_scope(
        &self,
        email: &str,
        client_id: &str,
        route: &str,
    ) -> Result<Option<String>, StoreError> {
        let conn = self.conn().await?;
        conn.query_opt(
            "SELECT scope FROM oauth_consents WHERE email = $1 AND client_id = $2 AND route = $3",
            &[&email, &client_id, &route],
        )
        .await
        .map_err(pg)?
        .as_ref()
        .map(|r| col(r, 0))
        .transpose()
    }

    async fn record_consent(
        &self,
        email: &str,
        client_id: &str,
        route: &str,
        scope: &str,
    ) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO oauth_consents (email, client_id, route, scope, created_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (email, client_id, route) DO UPDATE SET scope = excluded.scope",
            &[&email, &client_id, &route, &scope, &crate::now()],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn create_session(
        &self,
        email: Option<&str>,
        ttl_secs: i64,
    ) -> Result<String, StoreError> {
        let id = token::random_hex(32);
        let now = crate::now();
        let conn = self.conn().await?;
        conn.execute("DELETE FROM oauth_sessions WHERE expires_at <= $1", &[&now])
            .await
            .map_err(pg)?;
        conn.execute(
            "INSERT INTO oauth_sessions (id_hash, csrf, email, expires_at) VALUES ($1, $2, $3, $4)",
            &[
                &token::hash(&id),
                &token::random_hex(32),
                &email,
                &(now + ttl_secs),
            ],
        )
        .await
        .map_err(pg)?;
        Ok(id)
    }

    async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let conn = self.conn().await?;
        conn.query_opt(
            "SELECT csrf, email FROM oauth_sessions WHERE id_hash = $1 AND expires_at > $2",
            &[&token::hash(id), &crate::now()],
        )
        .await
        .map_err(pg)?
        .as_ref()
        .map(|r| {
            Ok(Session {
                csrf: col(r, 0)?,
                email: col(r, 1)?,
            })
        })
        .transpose()
    }

    async fn end_session(&self, id: &str) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.execute(
            "DELETE FROM oauth_sessions WHERE id_hash = $1",
            &[&token::hash(id)],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn insert_code(&self, code: &AuthCode) -> Result<String, StoreError> {
        let secret = token::random_hex(32);
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO oauth_codes (code_hash, family, client_id, redirect_uri, code_challenge,
                                      resource, email, scope, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &token::hash(&secret),
                &code.family,
                &code.client_id,
                &code.redirect_uri,
                &code.code_challenge,
                &code.resource,
                &code.email,
                &code.scope,
                &code.expires_at,
            ],
        )
        .await
        .map_err(pg)?;
        Ok(secret)
    }

    async fn redeem_code(
        &self,
        secret: &str,
        check: CodeCheck,
        ttl: TokenTtl,
    ) -> Result<CodeRedemption, StoreError> {
        let hash = token::hash(secret);
        let mut conn = self.conn().await?;
        let mut w = self.begin(&mut conn).await?;
        let now = crate::now();
        // The row lock of the first redemption holds the others until it
        // commits (tokens issued); they then find the code used.
        let first =
            w.tx.query_opt(
                "UPDATE oauth_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL
                 RETURNING family, client_id, redirect_uri, code_challenge, resource, email,
                           scope, expires_at",
                &[&hash, &now],
            )
            .await
            .map_err(pg)?;
        let Some(r) = first else {
            let family =
                w.tx.query_opt(
                    "SELECT family FROM oauth_codes WHERE code_hash = $1",
                    &[&hash],
                )
                .await
                .map_err(pg)?
                .as_ref()
                .map(|r| col::<String>(r, 0))
                .transpose()?;
            let Some(family) = family else {
                return Ok(CodeRedemption::Unknown);
            };
            revoke_family(&mut w, &family, now).await?;
            self.commit(w).await?;
            return Ok(CodeRedemption::Replayed);
        };
        let code = AuthCode {
            family: col(&r, 0)?,
            client_id: col(&r, 1)?,
            redirect_uri: col(&r, 2)?,
            code_challenge: col(&r, 3)?,
            resource: col(&r, 4)?,
            email: col(&r, 5)?,
            scope: col(&r, 6)?,
            expires_at: col(&r, 7)?,
        };
        let outcome = match check(&code) {
            Err(refusal) => CodeRedemption::Refused(refusal),
            Ok(()) => {
                let issued = issue(
                    &*w.tx,
                    &Grant {
                        family: &code.family,
                        client_id: &code.client_id,
                        email: &code.email,
                        resource: &code.resource,
                        scope: &code.scope,
                    },
                    ttl,
                )
                .await?;
                CodeRedemption::Issued(Box::new(code), issued)
            }
        };
        self.commit(w).await?;
        Ok(outcome)
    }

    async fn issue_tokens(
        &self,
        grant: &Grant<'_>,
        ttl: TokenTtl,
    ) -> Result<IssuedTokens, StoreError> {
        let mut conn = self.conn().await?;
        let w = self.begin(&mut conn).await?;
        let issued = issue(&*w.tx, grant, ttl).await?;
        self.commit(w).await?;
        Ok(issued)
    }

    async fn oauth_token(&self, secret: &str) -> Result<Option<OAuthToken>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {OAUTH_TOKEN_COLUMNS} FROM oauth_tokens WHERE secret_hash = $1"
            ))
            .await
            .map_err(pg)?;
        conn.query_opt(&stmt, &[&token::hash(secret)])
            .await
            .map_err(pg)?
            .as_ref()
            .map(row_to_oauth_token)
            .transpose()
    }

    async fn refresh(
        &self,
        presented: &str,
        check: RefreshCheck,
        ttl: TokenTtl,
    ) -> Result<RefreshOutcome, StoreError> {
        let hash = token::hash(presented);
        let mut conn = self.conn().await?;
        let mut w = self.begin(&mut conn).await?;
        // The family's lock, then the token's row, read again: concurrent
        // exchanges of one token wait for the first to commit, then find it
        // rotated.
        let family =
            w.tx.query_opt(
                "SELECT family FROM oauth_tokens WHERE secret_hash = $1 AND kind = 'refresh'",
                &[&hash],
            )
            .await
            .map_err(pg)?
            .as_ref()
            .map(|r| col::<String>(r, 0))
            .transpose()?;
        let Some(family) = family else {
            return Ok(RefreshOutcome::Unknown);
        };
        lock_family(&w, &family).await?;
        let old = w
            .tx
            .query_opt(
                &format!(
                    "SELECT {OAUTH_TOKEN_COLUMNS} FROM oauth_tokens WHERE secret_hash = $1 FOR UPDATE"
                ),
                &[&hash],
            )
            .await
            .map_err(pg)?
            .as_ref()
            .map(row_to_oauth_token)
            .transpose()?;
        let Some(old) = old.filter(|t| t.kind == OAuthTokenKind::Refresh) else {
            return Ok(RefreshOutcome::Unknown);
        };
        let now = crate::now();
        let outcome = match check(&old) {
            RefreshVerdict::Refuse(refusal) => RefreshOutcome::Refused(refusal),
            RefreshVerdict::RevokeFamily(refusal) => {
                revoke_family(&mut w, &old.family, now).await?;
                RefreshOutcome::Refused(refusal)
            }
            RefreshVerdict::Issue { scope } => {
                let rotated =
                    w.tx.execute(
                        "UPDATE oauth_tokens SET rotated_at = $2
                         WHERE id = $1 AND rotated_at IS NULL AND revoked_at IS NULL",
                        &[&old.id, &now],
                    )
                    .await
                    .map_err(pg)?
                        == 1;
                if rotated {
                    RefreshOutcome::Issued(
                        issue(
                            &*w.tx,
                            &Grant {
                                family: &old.family,
                                client_id: &old.client_id,
                                email: &old.email,
                                resource: &old.resource,
                                scope: &scope,
                            },
                            ttl,
                        )
                        .await?,
                    )
                } else {
                    // Exchanged (or revoked) before: a reuse.
                    revoke_family(&mut w, &old.family, now).await?;
                    RefreshOutcome::Reused(old)
                }
            }
        };
        self.commit(w).await?;
        Ok(outcome)
    }

    async fn revoke_family(&self, family: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let mut w = self.begin(&mut conn).await?;
        revoke_family(&mut w, family, crate::now()).await?;
        self.commit(w).await
    }

    async fn revoke_oauth_token(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let mut w = self.begin(&mut conn).await?;
        w.tx.execute(
            "UPDATE oauth_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &crate::now()],
        )
        .await
        .map_err(pg)?;
        w.changed(Change::OAuthToken { id: id.to_owned() });
        self.commit(w).await
    }

    async fn insert_device_code(
        &self,
        user_code: &str,
        client_id: &str,
        ttl_secs: i64,
        interval_secs: i64,
    ) -> Result<String, StoreError> {
        let secret = token::random_hex(32);
        let now = crate::now();
        let conn = self.conn().await?;
        // Forget requests long over (an hour after expiry: polls until then
        // still get expired_token).
        conn.execute(
            "DELETE FROM device_codes WHERE expires_at <= $1",
            &[&(now - 3600)],
        )
        .await
        .map_err(pg)?;
        conn.execute(
            "INSERT INTO device_codes (device_hash, user_code, client_id, created_at, expires_at,
                                       interval_secs, status)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending')",
            &[
                &token::hash(&secret),
                &user_code,
                &client_id,
                &now,
                &(now + ttl_secs),
                &interval_secs,
            ],
        )
        .await
        .map_err(|e| match pg(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("user code {user_code}")),
            other => other,
        })?;
        Ok(secret)
    }

    async fn pending_device(&self, user_code: &str) -> Result<Option<DeviceRequest>, StoreError> {
        let conn = self.conn().await?;
        conn.query_opt(
            "SELECT user_code, client_id, created_at, expires_at FROM device_codes
             WHERE user_code = $1 AND status = 'pending' AND expires_at > $2",
            &[&user_code, &crate::now()],
        )
        .await
        .map_err(pg)?
        .as_ref()
        .map(|r| {
            Ok(DeviceRequest {
                user_code: col(r, 0)?,
                client_id: col(r, 1)?,
                created_at: col(r, 2)?,
                expires_at: col(r, 3)?,
            })
        })
        .transpose()
    }

    async fn decide_device(
        &self,
        user_code: &str,
        email: &str,
        approve: bool,
    ) -> Result<bool, StoreError> {
        let conn = self.conn().await?;
        Ok(conn
            .execute(
                "UPDATE device_codes SET status = $2, email = $3
                 WHERE user_code = $1 AND status = 'pending' AND expires_at > $4",
                &[
                    &user_code,
                    &if approve { "approved" } else { "denied" },
                    &email,
                    &crate::now(),
                ],
            )
            .await
            .map_err(pg)?
            == 1)
    }

    async fn poll_device(&self, device_code: &str) -> Result<DevicePoll, StoreError> {
        let hash = token::hash(device_code);
        let mut conn = self.conn().await?;
        let w = self.begin(&mut conn).await?;
        // Of concurrent polls of an approved code (on any node) exactly one
        // deletes it; the others wait for its row lock, then find nothing.
        let approved =
            w.tx.query_opt(
                "DELETE FROM device_codes WHERE device_hash = $1 AND status = 'approved'
                 RETURNING email",
                &[&hash],
            )
            .await
            .map_err(pg)?;
        if let Some(r) = approved {
            let email: Option<String> = col(&r, 0)?;
            self.commit(w).await?;
            return Ok(DevicePoll::Approved(email.unwrap_or_default()));
        }
        let row =
            w.tx.query_opt(
                "SELECT status, expires_at, interval_secs, last_poll_ms
                 FROM device_codes WHERE device_hash = $1 FOR UPDATE",
                &[&hash],
            )
            .await
            .map_err(pg)?;
        let Some(r) = row else {
            return Ok(DevicePoll::Unknown);
        };
        let status: String = col(&r, 0)?;
        let expires_at: i64 = col(&r, 1)?;
        let interval: i64 = col(&r, 2)?;
        let last_poll: Option<i64> = col(&r, 3)?;
        let now_ms = now_ms();
        let poll = if expires_at * 1000 <= now_ms {
            DevicePoll::Expired
        } else if status == "denied" {
            DevicePoll::Denied
        } else if status == "approved" {
            // Approved between the two statements: the next poll spends it.
            DevicePoll::Pending
        } else if last_poll.is_some_and(|t| now_ms - t < interval * 1000) {
            // RFC 8628 §3.5: this and every later poll waits 5 s longer.
            w.tx.execute(
                "UPDATE device_codes SET interval_secs = interval_secs + 5, last_poll_ms = $2
                 WHERE device_hash = $1",
                &[&hash, &now_ms],
            )
            .await
            .map_err(pg)?;
            DevicePoll::SlowDown
        } else {
            w.tx.execute(
                "UPDATE device_codes SET last_poll_ms = $2 WHERE device_hash = $1",
                &[&hash, &now_ms],
            )
            .await
            .map_err(pg)?;
            DevicePoll::Pending
        };
        self.commit(w).await?;
        Ok(poll)
    }
}
