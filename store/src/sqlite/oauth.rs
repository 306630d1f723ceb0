//! The OAuth authorization server's state.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{changed, SqliteStore};
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

fn row_to_oauth_token(r: &rusqlite::Row<'_>) -> rusqlite::Result<OAuthToken> {
    let kind: String = r.get(1)?;
    Ok(OAuthToken {
        id: r.get(0)?,
        kind: if kind == "access" {
            OAuthTokenKind::Access
        } else {
            OAuthTokenKind::Refresh
        },
        family: r.get(2)?,
        client_id: r.get(3)?,
        email: r.get(4)?,
        resource: r.get(5)?,
        scope: r.get(6)?,
        expires_at: r.get(7)?,
        revoked_at: r.get(8)?,
        rotated_at: r.get(9)?,
    })
}

fn token_by_hash(c: &Connection, hash: &[u8]) -> rusqlite::Result<Option<OAuthToken>> {
    c.prepare_cached(&format!(
        "SELECT {OAUTH_TOKEN_COLUMNS} FROM oauth_tokens WHERE secret_hash = ?1"
    ))?
    .query_row([hash], row_to_oauth_token)
    .optional()
}

fn revoke_family(c: &Connection, family: &str, now: i64) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE oauth_tokens SET revoked_at = ?2 WHERE family = ?1 AND revoked_at IS NULL",
        params![family, now],
    )?;
    changed(
        c,
        &Change::OAuthFamily {
            family: family.to_owned(),
        },
    )
}

/// Inserts an access and a refresh token for `grant` (in the caller's
/// transaction).
fn issue(c: &Connection, grant: &Grant<'_>, ttl: TokenTtl) -> rusqlite::Result<IssuedTokens> {
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                token::random_hex(6),
                token::hash(secret),
                kind.as_str(),
                grant.family,
                grant.client_id,
                grant.email,
                grant.resource,
                grant.scope,
                now,
                now + ttl
            ],
        )?;
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

/// status, email, expires_at, interval_secs, last_poll_ms.
type DeviceRow = (String, Option<String>, i64, i64, Option<i64>);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[async_trait::async_trait]
impl OAuth for SqliteStore {
    async fn insert_client(&self, client: &OAuthClient) -> Result<(), StoreError> {
        let uris = client_json(client)?;
        let client = client.clone();
        self.run(move |c| {
            c.execute(
                "INSERT INTO oauth_clients (client_id, client_name, redirect_uris, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    client.client_id,
                    client.client_name,
                    uris,
                    client.created_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn upsert_client(&self, client: &OAuthClient) -> Result<(), StoreError> {
        let uris = client_json(client)?;
        let client = client.clone();
        self.run(move |c| {
            c.execute(
                "INSERT INTO oauth_clients (client_id, client_name, redirect_uris, created_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (client_id) DO UPDATE SET client_name = ?2, redirect_uris = ?3,
                     created_at = ?4",
                params![
                    client.client_id,
                    client.client_name,
                    uris,
                    client.created_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn client(&self, client_id: &str) -> Result<Option<OAuthClient>, StoreError> {
        let client_id = client_id.to_owned();
        let row: Option<(String, Option<String>, String, i64)> = self
            .run(move |c| {
                Ok(c.query_row(
                    "SELECT client_id, client_name, redirect_uris, created_at
                     FROM oauth_clients WHERE client_id = ?1",
                    [client_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?)
            })
            .await?;
        Ok(
            row.map(|(client_id, client_name, uris, created_at)| OAuthClient {
                client_id,
                client_name,
                redirect_uris: serde_json::from_str(&uris).unwrap_or_default(),
                created_at,
            }),
        )
    }

    async fn consent_scope(
        &self,
        email: &str,
        client_id: &str,
        route: &str,
    ) -> Result<Option<String>, StoreError> {
        let a = [email, client_id, route].map(str::to_owned);
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT scope FROM oauth_consents WHERE email = ?1 AND client_id = ?2 AND route = ?3",
                params![a[0], a[1], a[2]],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn record_consent(
        &self,
        email: &str,
        client_id: &str,
        route: &str,
        scope: &str,
    ) -> Result<(), StoreError> {
        let a = [email, client_id, route, scope].map(str::to_owned);
        self.run(move |c| {
            c.execute(
                "INSERT INTO oauth_consents (email, client_id, route, scope, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(email, client_id, route) DO UPDATE SET scope = excluded.scope",
                params![a[0], a[1], a[2], a[3], crate::now()],
            )?;
            Ok(())
        })
        .await
    }

    async fn create_session(
        &self,
        email: Option<&str>,
        ttl_secs: i64,
    ) -> Result<String, StoreError> {
        let id = token::random_hex(32);
        let hash = token::hash(&id);
        let email = email.map(str::to_owned);
        self.run(move |c| {
            let now = crate::now();
            c.execute("DELETE FROM oauth_sessions WHERE expires_at <= ?1", [now])?;
            c.execute(
                "INSERT INTO oauth_sessions (id_hash, csrf, email, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![hash, token::random_hex(32), email, now + ttl_secs],
            )?;
            Ok(())
        })
        .await?;
        Ok(id)
    }

    async fn session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let hash = token::hash(id);
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT csrf, email FROM oauth_sessions WHERE id_hash = ?1 AND expires_at > ?2",
                params![hash, crate::now()],
                |r| {
                    Ok(Session {
                        csrf: r.get(0)?,
                        email: r.get(1)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn end_session(&self, id: &str) -> Result<(), StoreError> {
        let hash = token::hash(id);
        self.run(move |c| {
            c.execute("DELETE FROM oauth_sessions WHERE id_hash = ?1", [hash])?;
            Ok(())
        })
        .await
    }

    async fn insert_code(&self, code: &AuthCode) -> Result<String, StoreError> {
        let secret = token::random_hex(32);
        let hash = token::hash(&secret);
        let code = code.clone();
        self.run(move |c| {
            c.execute(
                "INSERT INTO oauth_codes (code_hash, family, client_id, redirect_uri, code_challenge,
                                          resource, email, scope, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    hash,
                    code.family,
                    code.client_id,
                    code.redirect_uri,
                    code.code_challenge,
                    code.resource,
                    code.email,
                    code.scope,
                    code.expires_at
                ],
            )?;
            Ok(())
        })
        .await?;
        Ok(secret)
    }

    async fn redeem_code(
        &self,
        secret: &str,
        check: CodeCheck,
        ttl: TokenTtl,
    ) -> Result<CodeRedemption, StoreError> {
        let hash = token::hash(secret);
        self.run(move |c| {
            // One writer at a time from the first read: of concurrent
            // redemptions (in any process) exactly one finds the code unused.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row = tx
                .query_row(
                    "SELECT family, client_id, redirect_uri, code_challenge, resource, email, scope,
                            expires_at, used_at
                     FROM oauth_codes WHERE code_hash = ?1",
                    [&hash],
                    |r| {
                        Ok((
                            AuthCode {
                                family: r.get(0)?,
                                client_id: r.get(1)?,
                                redirect_uri: r.get(2)?,
                                code_challenge: r.get(3)?,
                                resource: r.get(4)?,
                                email: r.get(5)?,
                                scope: r.get(6)?,
                                expires_at: r.get(7)?,
                            },
                            r.get::<_, Option<i64>>(8)?,
                        ))
                    },
                )
                .optional()?;
            let Some((code, used_at)) = row else {
                return Ok(CodeRedemption::Unknown);
            };
            let now = crate::now();
            let first = used_at.is_none()
                && tx.execute(
                    "UPDATE oauth_codes SET used_at = ?2 WHERE code_hash = ?1 AND used_at IS NULL",
                    params![hash, now],
                )? == 1;
            if !first {
                revoke_family(&tx, &code.family, now)?;
                tx.commit()?;
                return Ok(CodeRedemption::Replayed);
            }
            let outcome = match check(&code) {
                Err(refusal) => CodeRedemption::Refused(refusal),
                Ok(()) => {
                    let issued = issue(
                        &tx,
                        &Grant {
                            family: &code.family,
                            client_id: &code.client_id,
                            email: &code.email,
                            resource: &code.resource,
                            scope: &code.scope,
                        },
                        ttl,
                    )?;
                    CodeRedemption::Issued(Box::new(code), issued)
                }
            };
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }

    async fn issue_tokens(
        &self,
        grant: &Grant<'_>,
        ttl: TokenTtl,
    ) -> Result<IssuedTokens, StoreError> {
        let g = [
            grant.family,
            grant.client_id,
            grant.email,
            grant.resource,
            grant.scope,
        ]
        .map(str::to_owned);
        self.run(move |c| {
            let tx = c.transaction()?;
            let issued = issue(
                &tx,
                &Grant {
                    family: &g[0],
                    client_id: &g[1],
                    email: &g[2],
                    resource: &g[3],
                    scope: &g[4],
                },
                ttl,
            )?;
            tx.commit()?;
            Ok(issued)
        })
        .await
    }

    async fn oauth_token(&self, secret: &str) -> Result<Option<OAuthToken>, StoreError> {
        let hash = token::hash(secret);
        self.run(move |c| Ok(token_by_hash(c, &hash)?)).await
    }

    async fn refresh(
        &self,
        presented: &str,
        check: RefreshCheck,
        ttl: TokenTtl,
    ) -> Result<RefreshOutcome, StoreError> {
        let hash = token::hash(presented);
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(old) =
                token_by_hash(&tx, &hash)?.filter(|t| t.kind == OAuthTokenKind::Refresh)
            else {
                return Ok(RefreshOutcome::Unknown);
            };
            let now = crate::now();
            let outcome = match check(&old) {
                RefreshVerdict::Refuse(refusal) => RefreshOutcome::Refused(refusal),
                RefreshVerdict::RevokeFamily(refusal) => {
                    revoke_family(&tx, &old.family, now)?;
                    RefreshOutcome::Refused(refusal)
                }
                RefreshVerdict::Issue { scope } => {
                    let rotated = tx.execute(
                        "UPDATE oauth_tokens SET rotated_at = ?2
                         WHERE id = ?1 AND rotated_at IS NULL AND revoked_at IS NULL",
                        params![old.id, now],
                    )? == 1;
                    if rotated {
                        RefreshOutcome::Issued(issue(
                            &tx,
                            &Grant {
                                family: &old.family,
                                client_id: &old.client_id,
                                email: &old.email,
                                resource: &old.resource,
                                scope: &scope,
                            },
                            ttl,
                        )?)
                    } else {
                        // Exchanged (or revoked) before: a reuse.
                        revoke_family(&tx, &old.family, now)?;
                        RefreshOutcome::Reused(old)
                    }
                }
            };
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }

    async fn revoke_family(&self, family: &str) -> Result<(), StoreError> {
        let family = family.to_owned();
        self.run(move |c| {
            let tx = c.transaction()?;
            revoke_family(&tx, &family, crate::now())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn revoke_oauth_token(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE oauth_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, crate::now()],
            )?;
            changed(&tx, &Change::OAuthToken { id })?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn insert_device_code(
        &self,
        user_code: &str,
        client_id: &str,
        ttl_secs: i64,
        interval_secs: i64,
    ) -> Result<String, StoreError> {
        let secret = token::random_hex(32);
        let hash = token::hash(&secret);
        let (user_code, client_id) = (user_code.to_owned(), client_id.to_owned());
        self.run(move |c| {
            let now = crate::now();
            // Forget requests long over (an hour after expiry: polls until
            // then still get expired_token).
            c.execute(
                "DELETE FROM device_codes WHERE expires_at <= ?1",
                [now - 3600],
            )?;
            let inserted = c.execute(
                "INSERT INTO device_codes (device_hash, user_code, client_id, created_at, expires_at,
                                           interval_secs, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending')",
                params![hash, user_code, client_id, now, now + ttl_secs, interval_secs],
            );
            match inserted {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::Conflict(format!("user code {user_code}")).into())
                }
                Err(e) => Err(e.into()),
            }
        })
        .await?;
        Ok(secret)
    }

    async fn pending_device(&self, user_code: &str) -> Result<Option<DeviceRequest>, StoreError> {
        let user_code = user_code.to_owned();
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT user_code, client_id, created_at, expires_at FROM device_codes
                 WHERE user_code = ?1 AND status = 'pending' AND expires_at > ?2",
                params![user_code, crate::now()],
                |r| {
                    Ok(DeviceRequest {
                        user_code: r.get(0)?,
                        client_id: r.get(1)?,
                        created_at: r.get(2)?,
                        expires_at: r.get(3)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn decide_device(
        &self,
        user_code: &str,
        email: &str,
        approve: bool,
    ) -> Result<bool, StoreError> {
        let (user_code, email) = (user_code.to_owned(), email.to_owned());
        self.run(move |c| {
            Ok(c.execute(
                "UPDATE device_codes SET status = ?2, email = ?3
                 WHERE user_code = ?1 AND status = 'pending' AND expires_at > ?4",
                params![
                    user_code,
                    if approve { "approved" } else { "denied" },
                    email,
                    crate::now()
                ],
            )? == 1)
        })
        .await
    }

    async fn poll_device(&self, device_code: &str) -> Result<DevicePoll, StoreError> {
        let hash = token::hash(device_code);
        self.run(move |c| {
            // A write lock from the first read: of concurrent polls of an
            // approved code (in any process), exactly one spends it.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let approved: Option<Option<String>> = tx
                .query_row(
                    "DELETE FROM device_codes WHERE device_hash = ?1 AND status = 'approved'
                     RETURNING email",
                    [&hash],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(email) = approved {
                tx.commit()?;
                return Ok(DevicePoll::Approved(email.unwrap_or_default()));
            }
            let row: Option<DeviceRow> = tx
                .query_row(
                    "SELECT status, email, expires_at, interval_secs, last_poll_ms
                     FROM device_codes WHERE device_hash = ?1",
                    [&hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            let Some((status, _email, expires_at, interval, last_poll)) = row else {
                return Ok(DevicePoll::Unknown);
            };
            let now_ms = now_ms();
            let poll = if expires_at * 1000 <= now_ms {
                DevicePoll::Expired
            } else if status == "denied" {
                DevicePoll::Denied
            } else if last_poll.is_some_and(|t| now_ms - t < interval * 1000) {
                // RFC 8628 §3.5: this and every later poll waits 5 s longer.
                tx.execute(
                    "UPDATE device_codes SET interval_secs = interval_secs + 5, last_poll_ms = ?2
                     WHERE device_hash = ?1",
                    params![hash, now_ms],
                )?;
                DevicePoll::SlowDown
            } else {
                tx.execute(
                    "UPDATE device_codes SET last_poll_ms = ?2 WHERE device_hash = ?1",
                    params![hash, now_ms],
                )?;
                DevicePoll::Pending
            };
            tx.commit()?;
            Ok(poll)
        })
        .await
    }
}
