//! The OAuth side of the embedded store: local accounts, registered clients,
//! remembered consents, login sessions, authorization codes, and the access
//! and refresh tokens issued from them. Every secret (session id, code,
//! token) is stored as its SHA-256 only.

use rusqlite::{params, OptionalExtension};

use crate::error::RelayError;
use crate::store::{now, Store, TokenRejection};
use crate::token;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    email         TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS oauth_clients (
    client_id     TEXT PRIMARY KEY,
    client_name   TEXT,
    redirect_uris TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS oauth_consents (
    email      TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    route      TEXT NOT NULL,
    scope      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (email, client_id, route)
);
CREATE TABLE IF NOT EXISTS oauth_sessions (
    id_hash    BLOB PRIMARY KEY,
    csrf       TEXT NOT NULL,
    email      TEXT,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS oauth_codes (
    code_hash      BLOB PRIMARY KEY,
    family         TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    resource       TEXT NOT NULL,
    email          TEXT NOT NULL,
    scope          TEXT NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER
);
CREATE TABLE IF NOT EXISTS oauth_tokens (
    id          TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    family      TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    email       TEXT NOT NULL,
    resource    TEXT NOT NULL,
    scope       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    rotated_at  INTEGER
);
CREATE INDEX IF NOT EXISTS oauth_tokens_family ON oauth_tokens (family);
CREATE TABLE IF NOT EXISTS device_codes (
    device_hash   BLOB PRIMARY KEY,
    user_code     TEXT NOT NULL UNIQUE,
    client_id     TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    interval_secs INTEGER NOT NULL,
    last_poll_ms  INTEGER,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
    email         TEXT
);
";

/// Prefix of OAuth access tokens (bearer tokens for one route).
pub const ACCESS_PREFIX: &str = "dboa_";
/// Prefix of OAuth refresh tokens.
pub const REFRESH_PREFIX: &str = "dbor_";

/// A client registered through dynamic client registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub created_at: i64,
}

/// A login session (the browser's cookie names it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub csrf: String,
    pub email: Option<String>,
}

/// What an authorization code was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCode {
    /// Every token issued from this code shares it.
    pub family: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub resource: String,
    pub email: String,
    pub scope: String,
    pub expires_at: i64,
}

/// The outcome of redeeming a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRedemption {
    /// First use.
    Fresh(AuthCode),
    /// The code was redeemed before: its tokens are now revoked.
    Replayed,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthTokenKind {
    Access,
    Refresh,
}

impl OAuthTokenKind {
    fn as_str(self) -> &'static str {
        match self {
            OAuthTokenKind::Access => "access",
            OAuthTokenKind::Refresh => "refresh",
        }
    }
}

/// An issued OAuth token's record (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthToken {
    pub id: String,
    pub kind: OAuthTokenKind,
    pub family: String,
    pub client_id: String,
    pub email: String,
    /// The one route URL this token is for (its audience).
    pub resource: String,
    pub scope: String,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// Set when a refresh token was exchanged for its successor.
    pub rotated_at: Option<i64>,
}

impl OAuthToken {
    /// Whether the token may be used at `now`.
    pub fn check(&self, now: i64) -> Result<(), TokenRejection> {
        if self.revoked_at.is_some() {
            return Err(TokenRejection::Revoked);
        }
        if self.expires_at <= now {
            return Err(TokenRejection::Expired);
        }
        Ok(())
    }
}

/// A freshly issued access + refresh pair.
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
    pub scope: String,
}

/// Who and what a token grant is for.
pub struct Grant<'a> {
    pub family: &'a str,
    pub client_id: &'a str,
    pub email: &'a str,
    pub resource: &'a str,
    pub scope: &'a str,
}

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

impl Store {
    // ---- local accounts ----------------------------------------------------

    /// Adds a local account with an already hashed password.
    pub fn add_user(&self, email: &str, password_hash: &str) -> Result<(), RelayError> {
        let n = self.conn().execute(
            "INSERT INTO users (email, password_hash, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(email) DO NOTHING",
            params![email, password_hash, now()],
        )?;
        if n == 0 {
            return Err(RelayError::UserExists(email.to_owned()));
        }
        Ok(())
    }

    /// The stored password hash of a local account.
    pub fn user_password_hash(&self, email: &str) -> Result<Option<String>, RelayError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT password_hash FROM users WHERE email = ?1",
                [email],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Every local account and when it was added.
    pub fn list_users(&self) -> Result<Vec<(String, i64)>, RelayError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT email, created_at FROM users ORDER BY email")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Removes an account; its sessions end and its OAuth tokens are revoked.
    pub fn remove_user(&self, email: &str) -> Result<(), RelayError> {
        let conn = self.conn();
        if conn.execute("DELETE FROM users WHERE email = ?1", [email])? == 0 {
            return Err(RelayError::NoSuchUser(email.to_owned()));
        }
        conn.execute("DELETE FROM oauth_sessions WHERE email = ?1", [email])?;
        conn.execute("DELETE FROM oauth_consents WHERE email = ?1", [email])?;
        conn.execute(
            "UPDATE oauth_tokens SET revoked_at = ?2 WHERE email = ?1 AND revoked_at IS NULL",
            params![email, now()],
        )?;
        Ok(())
    }

    // ---- clients -----------------------------------------------------------

    pub fn insert_client(&self, client: &OAuthClient) -> Result<(), RelayError> {
        let uris = serde_json::to_string(&client.redirect_uris)
            .map_err(|e| RelayError::Config(e.to_string()))?;
        self.conn().execute(
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
    }

    /// Stores (or refreshes) a client described by a client metadata
    /// document: its id is the document's URL.
    pub fn upsert_client(&self, client: &OAuthClient) -> Result<(), RelayError> {
        let uris = serde_json::to_string(&client.redirect_uris)
            .map_err(|e| RelayError::Config(e.to_string()))?;
        self.conn().execute(
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
    }

    pub fn client(&self, client_id: &str) -> Result<Option<OAuthClient>, RelayError> {
        let row: Option<(String, Option<String>, String, i64)> = self
            .conn()
            .query_row(
                "SELECT client_id, client_name, redirect_uris, created_at
                 FROM oauth_clients WHERE client_id = ?1",
                [client_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        Ok(
            row.map(|(client_id, client_name, uris, created_at)| OAuthClient {
                client_id,
                client_name,
                redirect_uris: serde_json::from_str(&uris).unwrap_or_default(),
                created_at,
            }),
        )
    }

    // ---- consents ----------------------------------------------------------

    pub fn has_consent(
        &self,
        email: &str,
        client_id: &str,
        route: &str,
        scope: &str,
    ) -> Result<bool, RelayError> {
        let granted: Option<String> = self
            .conn()
            .query_row(
                "SELECT scope FROM oauth_consents WHERE email = ?1 AND client_id = ?2 AND route = ?3",
                params![email, client_id, route],
                |r| r.get(0),
            )
            .optional()?;
        Ok(granted.is_some_and(|g| crate::oauth::scope::covers(&g, scope)))
    }

    pub fn record_consent(
        &self,
        email: &str,
        client_id: &str,
        route: &str,
        scope: &str,
    ) -> Result<(), RelayError> {
        self.conn().execute(
            "INSERT INTO oauth_consents (email, client_id, route, scope, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(email, client_id, route) DO UPDATE SET scope = excluded.scope",
            params![email, client_id, route, scope, now()],
        )?;
        Ok(())
    }

    // ---- login sessions ----------------------------------------------------

    /// Starts a session; returns its secret id (the cookie's value).
    pub fn create_session(&self, email: Option<&str>, ttl_secs: i64) -> Result<String, RelayError> {
        let id = token::random_hex(32);
        let now = now();
        let conn = self.conn();
        conn.execute("DELETE FROM oauth_sessions WHERE expires_at <= ?1", [now])?;
        conn.execute(
            "INSERT INTO oauth_sessions (id_hash, csrf, email, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                token::hash(&id),
                token::random_hex(32),
                email,
                now + ttl_secs
            ],
        )?;
        Ok(id)
    }

    /// A live session by its secret id.
    pub fn session(&self, id: &str) -> Result<Option<Session>, RelayError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT csrf, email FROM oauth_sessions WHERE id_hash = ?1 AND expires_at > ?2",
                params![token::hash(id), now()],
                |r| {
                    Ok(Session {
                        csrf: r.get(0)?,
                        email: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn end_session(&self, id: &str) -> Result<(), RelayError> {
        self.conn().execute(
            "DELETE FROM oauth_sessions WHERE id_hash = ?1",
            [token::hash(id)],
        )?;
        Ok(())
    }

    // ---- authorization codes -----------------------------------------------

    /// Stores a code; returns its secret.
    pub fn insert_code(&self, code: &AuthCode) -> Result<String, RelayError> {
        let secret = token::random_hex(32);
        self.conn().execute(
            "INSERT INTO oauth_codes (code_hash, family, client_id, redirect_uri, code_challenge,
                                      resource, email, scope, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                token::hash(&secret),
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
        Ok(secret)
    }

    /// Redeems a code: the first redemption gets it; any later one revokes
    /// every token issued from it (RFC 6749 §4.1.2).
    pub fn redeem_code(&self, secret: &str) -> Result<CodeRedemption, RelayError> {
        let hash = token::hash(secret);
        let conn = self.conn();
        let row = conn
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
        let now = now();
        let first = used_at.is_none()
            && conn.execute(
                "UPDATE oauth_codes SET used_at = ?2 WHERE code_hash = ?1 AND used_at IS NULL",
                params![hash, now],
            )? == 1;
        if !first {
            conn.execute(
                "UPDATE oauth_tokens SET revoked_at = ?2 WHERE family = ?1 AND revoked_at IS NULL",
                params![code.family, now],
            )?;
            return Ok(CodeRedemption::Replayed);
        }
        Ok(CodeRedemption::Fresh(code))
    }

    // ---- tokens ------------------------------------------------------------

    /// Issues an access token and a refresh token for one grant.
    pub fn issue_tokens(
        &self,
        grant: &Grant<'_>,
        access_ttl: i64,
        refresh_ttl: i64,
    ) -> Result<IssuedTokens, RelayError> {
        let now = now();
        let access = format!("{ACCESS_PREFIX}{}", token::random_hex(32));
        let refresh = format!("{REFRESH_PREFIX}{}", token::random_hex(32));
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (kind, secret, ttl) in [
            (OAuthTokenKind::Access, &access, access_ttl),
            (OAuthTokenKind::Refresh, &refresh, refresh_ttl),
        ] {
            tx.execute(
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
        tx.commit()?;
        Ok(IssuedTokens {
            access_token: access,
            refresh_token: refresh,
            expires_in: access_ttl,
            scope: grant.scope.to_owned(),
        })
    }

    /// A token's record by its secret, whatever its state.
    pub fn oauth_token(&self, secret: &str) -> Result<Option<OAuthToken>, RelayError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {OAUTH_TOKEN_COLUMNS} FROM oauth_tokens WHERE secret_hash = ?1"),
                [token::hash(secret)],
                row_to_oauth_token,
            )
            .optional()?)
    }

    /// Checks a presented access token: known, an access token, live.
    pub fn verify_access(&self, presented: &str) -> Result<OAuthToken, TokenRejection> {
        let record = self
            .oauth_token(presented)
            .map_err(|e| {
                tracing::error!(error = %e, "OAuth token lookup failed");
                TokenRejection::Unknown
            })?
            .filter(|t| t.kind == OAuthTokenKind::Access)
            .ok_or(TokenRejection::Unknown)?;
        record.check(now())?;
        Ok(record)
    }

    /// Marks a refresh token as exchanged. False when it already was (a
    /// reuse: the caller revokes the family).
    pub fn rotate_refresh(&self, id: &str) -> Result<bool, RelayError> {
        Ok(self.conn().execute(
            "UPDATE oauth_tokens SET rotated_at = ?2
             WHERE id = ?1 AND rotated_at IS NULL AND revoked_at IS NULL",
            params![id, now()],
        )? == 1)
    }

    /// Revokes every token of a grant.
    pub fn revoke_family(&self, family: &str) -> Result<(), RelayError> {
        self.conn().execute(
            "UPDATE oauth_tokens SET revoked_at = ?2 WHERE family = ?1 AND revoked_at IS NULL",
            params![family, now()],
        )?;
        Ok(())
    }

    /// Revokes one token.
    pub fn revoke_oauth_token(&self, id: &str) -> Result<(), RelayError> {
        self.conn().execute(
            "UPDATE oauth_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now()],
        )?;
        Ok(())
    }
}

// ---- device authorization (RFC 8628, `agent login`) ---------------------------

/// A device authorization request waiting for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    /// Normalized: eight letters, no dash.
    pub user_code: String,
    pub client_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// What a poll of the token endpoint with a device code finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePoll {
    Unknown,
    Expired,
    Denied,
    /// Polled faster than the interval: it is now 5 s longer.
    SlowDown,
    Pending,
    /// Approved by this person; the device code is now spent.
    Approved(String),
}

/// status, email, expires_at, interval_secs, last_poll_ms.
type DeviceRow = (String, Option<String>, i64, i64, Option<i64>);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Starts a device authorization; returns the device code (secret).
    /// `user_code` must be unused (the caller retries with another one).
    pub fn insert_device_code(
        &self,
        user_code: &str,
        client_id: &str,
        ttl_secs: i64,
        interval_secs: i64,
    ) -> Result<String, RelayError> {
        let secret = token::random_hex(32);
        let now = now();
        let conn = self.conn();
        // Forget requests long over (an hour after expiry: polls until then
        // still get expired_token).
        conn.execute(
            "DELETE FROM device_codes WHERE expires_at <= ?1",
            [now - 3600],
        )?;
        conn.execute(
            "INSERT INTO device_codes (device_hash, user_code, client_id, created_at, expires_at,
                                       interval_secs, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending')",
            params![
                token::hash(&secret),
                user_code,
                client_id,
                now,
                now + ttl_secs,
                interval_secs
            ],
        )?;
        Ok(secret)
    }

    /// A pending, unexpired request by its (normalized) user code.
    pub fn pending_device(&self, user_code: &str) -> Result<Option<DeviceRequest>, RelayError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT user_code, client_id, created_at, expires_at FROM device_codes
                 WHERE user_code = ?1 AND status = 'pending' AND expires_at > ?2",
                params![user_code, now()],
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
    }

    /// The person's answer to a pending request: approved as `email`, or
    /// denied. False if no such request is pending.
    pub fn decide_device(
        &self,
        user_code: &str,
        email: &str,
        approve: bool,
    ) -> Result<bool, RelayError> {
        Ok(self.conn().execute(
            "UPDATE device_codes SET status = ?2, email = ?3
             WHERE user_code = ?1 AND status = 'pending' AND expires_at > ?4",
            params![
                user_code,
                if approve { "approved" } else { "denied" },
                email,
                now()
            ],
        )? == 1)
    }

    /// One poll of the token endpoint with a device code.
    pub fn poll_device(&self, device_code: &str) -> Result<DevicePoll, RelayError> {
        let hash = token::hash(device_code);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let row: Option<DeviceRow> = tx
            .query_row(
                "SELECT status, email, expires_at, interval_secs, last_poll_ms
                 FROM device_codes WHERE device_hash = ?1",
                [&hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((status, email, expires_at, interval, last_poll)) = row else {
            return Ok(DevicePoll::Unknown);
        };
        let now_ms = now_ms();
        let poll = if status == "approved" {
            tx.execute("DELETE FROM device_codes WHERE device_hash = ?1", [&hash])?;
            DevicePoll::Approved(email.unwrap_or_default())
        } else if expires_at * 1000 <= now_ms {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("dbr-oauth-{}", token::random_hex(6)));
        (Store::open(&dir).expect("open"), dir)
    }

    fn grant(family: &str) -> Grant<'_> {
        Grant {
            family,
            client_id: "c1",
            email: "a@x",
            resource: "https://r/mcp/db",
            scope: "mcp",
        }
    }

    #[test]
    fn a_device_code_is_pending_until_decided_then_spent_once() {
        let (s, dir) = store();
        let code = s
            .insert_device_code("BCDFGHJK", "drawbridge-agent", 600, 1)
            .expect("insert");
        assert!(
            s.insert_device_code("BCDFGHJK", "x", 600, 1).is_err(),
            "user codes are unique"
        );
        assert_eq!(s.poll_device(&code).expect("poll"), DevicePoll::Pending);
        // At once again: too fast, and the interval grows.
        assert_eq!(s.poll_device(&code).expect("poll"), DevicePoll::SlowDown);
        assert_eq!(s.poll_device(&code).expect("poll"), DevicePoll::SlowDown);
        assert!(s.pending_device("BCDFGHJK").expect("lookup").is_some());
        assert!(s.pending_device("BCDFGHJL").expect("lookup").is_none());
        assert!(s.decide_device("BCDFGHJK", "a@x", true).expect("approve"));
        assert!(!s
            .decide_device("BCDFGHJK", "b@x", true)
            .expect("decided once"));
        assert_eq!(
            s.poll_device(&code).expect("poll"),
            DevicePoll::Approved("a@x".into())
        );
        assert_eq!(s.poll_device(&code).expect("poll"), DevicePoll::Unknown);
        // Denied, and expired.
        let denied = s
            .insert_device_code("CDFGHJKL", "c", 600, 1)
            .expect("insert");
        assert!(s.decide_device("CDFGHJKL", "a@x", false).expect("deny"));
        assert_eq!(s.poll_device(&denied).expect("poll"), DevicePoll::Denied);
        let expired = s.insert_device_code("DFGHJKLM", "c", 0, 1).expect("insert");
        assert_eq!(s.poll_device(&expired).expect("poll"), DevicePoll::Expired);
        assert!(!s.decide_device("DFGHJKLM", "a@x", true).expect("too late"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_code_is_redeemed_once_and_a_replay_revokes_its_tokens() {
        let (s, dir) = store();
        let code = AuthCode {
            family: "fam".into(),
            client_id: "c1".into(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            code_challenge: "x".into(),
            resource: "https://r/mcp/db".into(),
            email: "a@x".into(),
            scope: "mcp".into(),
            expires_at: now() + 60,
        };
        let secret = s.insert_code(&code).expect("insert");
        assert_eq!(
            s.redeem_code(&secret).expect("redeem"),
            CodeRedemption::Fresh(code)
        );
        let issued = s.issue_tokens(&grant("fam"), 3600, 86400).expect("issue");
        assert!(s.verify_access(&issued.access_token).is_ok());
        assert_eq!(
            s.redeem_code(&secret).expect("redeem"),
            CodeRedemption::Replayed
        );
        assert_eq!(
            s.verify_access(&issued.access_token),
            Err(TokenRejection::Revoked)
        );
        assert_eq!(
            s.redeem_code("nope").expect("redeem"),
            CodeRedemption::Unknown
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_refresh_token_rotates_once_and_only_access_tokens_authenticate() {
        let (s, dir) = store();
        let issued = s.issue_tokens(&grant("f2"), 3600, 86400).expect("issue");
        // A refresh token is not a bearer token for routes.
        assert_eq!(
            s.verify_access(&issued.refresh_token),
            Err(TokenRejection::Unknown)
        );
        let refresh = s
            .oauth_token(&issued.refresh_token)
            .expect("lookup")
            .expect("some");
        assert!(s.rotate_refresh(&refresh.id).expect("rotate"));
        assert!(!s.rotate_refresh(&refresh.id).expect("rotate again"));
        s.revoke_family("f2").expect("revoke");
        assert_eq!(
            s.verify_access(&issued.access_token),
            Err(TokenRejection::Revoked)
        );
        // Expired tokens are refused.
        let short = s.issue_tokens(&grant("f3"), 0, 0).expect("issue");
        assert_eq!(
            s.verify_access(&short.access_token),
            Err(TokenRejection::Expired)
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
