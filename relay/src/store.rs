//! The relay's embedded state: agent and client tokens, route claims. The
//! OAuth tables (accounts, clients, codes, tokens) are in [`crate::oauth_store`].
//!
//! SQLite in WAL mode with `synchronous=FULL`: a token that `relay token create`
//! printed survives a power cut. Other processes (the `relay token …`
//! commands) write to the same file; the running relay sees their changes on
//! its next read, and notices them in the background through
//! `PRAGMA data_version`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::RelayError;
use crate::token::{self, Secret, TokenKind};

/// How often `last_used_at` is written for one token, at most.
const LAST_USED_RESOLUTION: i64 = 60;

/// A token's record (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub kind: TokenKind,
    pub owner: String,
    pub name: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub replaced_by: Option<String>,
}

impl TokenRecord {
    /// Whether the token may be used at `now`, and if not, why.
    pub fn check(&self, now: i64) -> Result<(), TokenRejection> {
        if self.revoked_at.is_some() {
            return Err(TokenRejection::Revoked);
        }
        if matches!(self.expires_at, Some(t) if t <= now) {
            return Err(TokenRejection::Expired);
        }
        Ok(())
    }

    /// A one-word status for listings.
    pub fn status(&self, now: i64) -> &'static str {
        match self.check(now) {
            Ok(()) if self.replaced_by.is_some() => "rotated",
            Ok(()) => "active",
            Err(TokenRejection::Revoked) => "revoked",
            Err(TokenRejection::Expired) => "expired",
            Err(TokenRejection::Unknown) => "unknown",
        }
    }
}

/// Why a presented token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("the token is not known to this relay")]
    Unknown,
    #[error("the token was revoked")]
    Revoked,
    #[error("the token has expired")]
    Expired,
}

/// The outcome of claiming a route name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteClaim {
    /// The route is (now) this owner's.
    Granted,
    /// The route belongs to someone else.
    Taken { owner: String },
    /// The route is free, but the owner already holds `max` routes.
    TooMany { max: u32 },
}

/// The embedded state store.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
    last_used_written: Mutex<HashMap<String, i64>>,
    /// The grants of each route, read once (see [`crate::grant_store`]).
    pub(crate) grant_cache: crate::grant_store::GrantCache,
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('agent', 'client')),
    owner        TEXT NOT NULL,
    name         TEXT NOT NULL,
    secret_hash  BLOB NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    revoked_at   INTEGER,
    replaced_by  TEXT
);
CREATE TABLE IF NOT EXISTS routes (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
";

const TOKEN_COLUMNS: &str =
    "id, kind, owner, name, created_at, expires_at, last_used_at, revoked_at, replaced_by";

impl Store {
    /// Opens (creating if needed) the store in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Store, RelayError> {
        std::fs::create_dir_all(state_dir).map_err(|source| RelayError::File {
            what: "cannot create state dir",
            path: state_dir.to_path_buf(),
            source,
        })?;
        restrict_dir(state_dir);
        let path = state_dir.join("relay.db");
        let wrap = |source| RelayError::Store {
            path: path.clone(),
            source,
        };
        // Tokens' hashes, sessions, OAuth state: owner-only, whatever the umask.
        private_db(&path)?;
        let conn = Connection::open(&path).map_err(wrap)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(wrap)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(wrap)?;
        // SQLite gives them the database's mode; older relays' may be wider.
        for suffix in ["-wal", "-shm"] {
            let mut side = path.clone().into_os_string();
            side.push(suffix);
            chmod_private(Path::new(&side), false)?;
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(wrap)?;
        conn.execute_batch(SCHEMA).map_err(wrap)?;
        conn.execute_batch(crate::oauth_store::SCHEMA)
            .map_err(wrap)?;
        conn.execute_batch(TOOL_PINS_SCHEMA).map_err(wrap)?;
        conn.execute_batch(crate::grant_store::SCHEMA)
            .map_err(wrap)?;
        crate::grant_store::migrate(&conn).map_err(wrap)?;
        conn.execute_batch(crate::identity_groups::SCHEMA)
            .map_err(wrap)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path,
            last_used_written: Mutex::new(HashMap::new()),
            grant_cache: crate::grant_store::GrantCache::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (each call
        // is one statement or one transaction), so a poisoned lock is usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a token and returns its record and its secret (shown once).
    pub fn create_token(
        &self,
        kind: TokenKind,
        owner: &str,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<(TokenRecord, Secret), RelayError> {
        let secret = Secret::generate(kind);
        let record = TokenRecord {
            id: token::random_hex(6),
            kind,
            owner: owner.to_owned(),
            name: name.to_owned(),
            created_at: now(),
            expires_at,
            last_used_at: None,
            revoked_at: None,
            replaced_by: None,
        };
        self.conn().execute(
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
        Ok((record, secret))
    }

    /// Every token, oldest first.
    pub fn list_tokens(&self) -> Result<Vec<TokenRecord>, RelayError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY rowid"
        ))?;
        let rows = stmt.query_map([], row_to_record)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// One token by id.
    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, RelayError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"),
                [id],
                row_to_record,
            )
            .optional()?)
    }

    /// Revokes a token at once.
    pub fn revoke_token(&self, id: &str) -> Result<TokenRecord, RelayError> {
        let record = self
            .token(id)?
            .ok_or_else(|| RelayError::NoSuchToken(id.to_owned()))?;
        if record.revoked_at.is_some() {
            return Err(RelayError::AlreadyRevoked(id.to_owned()));
        }
        self.conn().execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1",
            params![id, now()],
        )?;
        self.token(id)?
            .ok_or_else(|| RelayError::NoSuchToken(id.to_owned()))
    }

    /// Issues a successor with the same kind, owner and name. The old token
    /// stays valid for `grace`, then expires.
    pub fn rotate_token(
        &self,
        id: &str,
        grace: Duration,
        expires_at: Option<i64>,
    ) -> Result<(TokenRecord, Secret), RelayError> {
        let old = self
            .token(id)?
            .ok_or_else(|| RelayError::NoSuchToken(id.to_owned()))?;
        if old.revoked_at.is_some() {
            return Err(RelayError::AlreadyRevoked(id.to_owned()));
        }
        let (new, secret) = self.create_token(old.kind, &old.owner, &old.name, expires_at)?;
        let grace_end = now() + grace.as_secs() as i64;
        let old_expiry = match old.expires_at {
            Some(t) => t.min(grace_end),
            None => grace_end,
        };
        self.conn().execute(
            "UPDATE tokens SET expires_at = ?2, replaced_by = ?3 WHERE id = ?1",
            params![id, old_expiry, new.id],
        )?;
        Ok((new, secret))
    }

    /// Looks up a presented token. On success, records its use (at most once a
    /// minute per token, so that verification stays a read).
    pub fn verify(&self, presented: &str) -> Result<TokenRecord, TokenRejection> {
        if token::claimed_kind(presented).is_none() {
            return Err(TokenRejection::Unknown);
        }
        let hash = token::hash(presented);
        let record = {
            let conn = self.conn();
            // On every request: a cached statement, not SQL parsed each time.
            conn.prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE secret_hash = ?1"
            ))
            .and_then(|mut stmt| stmt.query_row([hash], row_to_record))
            .optional()
            .map_err(|e| {
                tracing::error!(error = %e, "token lookup failed");
                TokenRejection::Unknown
            })?
            .ok_or(TokenRejection::Unknown)?
        };
        let now = now();
        record.check(now)?;
        self.touch(&record.id, now);
        Ok(record)
    }

    fn touch(&self, id: &str, now: i64) {
        {
            let mut written = self
                .last_used_written
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match written.get(id) {
                Some(t) if now - t < LAST_USED_RESOLUTION => return,
                _ => {
                    written.insert(id.to_owned(), now);
                }
            }
        }
        if let Err(e) = self.conn().execute(
            "UPDATE tokens SET last_used_at = ?2 WHERE id = ?1",
            params![id, now],
        ) {
            tracing::warn!(error = %e, token = id, "could not record token use");
        }
    }

    /// Claims `name` for `owner`: the first owner to serve a route keeps it.
    pub fn claim_route(&self, name: &str, owner: &str) -> Result<RouteClaim, RelayError> {
        self.claim_route_capped(name, owner, 0)
    }

    /// [`Store::claim_route`], refusing a new name to an owner who already
    /// holds `max` routes (0: no cap). Counting and claiming are one
    /// transaction, so concurrent claims cannot pass the cap.
    pub fn claim_route_capped(
        &self,
        name: &str,
        owner: &str,
        max: u32,
    ) -> Result<RouteClaim, RelayError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut current: Option<String> = tx
            .query_row("SELECT owner FROM routes WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        if current.is_none() {
            if max > 0 {
                let held: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM routes WHERE owner = ?1",
                    [owner],
                    |r| r.get(0),
                )?;
                if held >= i64::from(max) {
                    return Ok(RouteClaim::TooMany { max });
                }
            }
            tx.execute(
                "INSERT INTO routes (name, owner, created_at) VALUES (?1, ?2, ?3)",
                params![name, owner, now()],
            )?;
            current = Some(owner.to_owned());
        }
        tx.commit()?;
        drop(conn);
        let current = current.unwrap_or_default();
        // Released by another process and claimed again: no grant of the
        // previous owner may be remembered.
        self.grant_cache.forget(name);
        Ok(if current == owner {
            RouteClaim::Granted
        } else {
            RouteClaim::Taken { owner: current }
        })
    }

    /// The owner of a claimed route.
    pub fn route_owner(&self, name: &str) -> Result<Option<String>, RelayError> {
        // On every request: a cached statement, not SQL parsed each time.
        Ok(self
            .conn()
            .prepare_cached("SELECT owner FROM routes WHERE name = ?1")
            .and_then(|mut stmt| stmt.query_row([name], |r| r.get(0)))
            .optional()?)
    }

    /// Every claimed route and its owner.
    pub fn list_routes(&self) -> Result<Vec<(String, String)>, RelayError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, owner FROM routes ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Releases a route claim so another owner may take the name. Its tool
    /// pins and its grants go with it: the next owner's tools are pinned
    /// afresh, and nobody keeps a grant the previous owner made.
    pub fn release_route(&self, name: &str) -> Result<bool, RelayError> {
        let conn = self.conn();
        conn.execute("DELETE FROM tool_pins WHERE route = ?1", [name])?;
        conn.execute("DELETE FROM route_grants WHERE route = ?1", [name])?;
        let released = conn.execute("DELETE FROM routes WHERE name = ?1", [name])? > 0;
        drop(conn);
        self.grant_cache.forget(name);
        Ok(released)
    }

    /// Changes whenever another connection (another process) commits.
    pub fn data_version(&self) -> Result<i64, RelayError> {
        Ok(self
            .conn()
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }
}

// ---------------------------------------------------------------------------
// Tool pins (rug-pull defence, see `crate::pins`): per route and tool, the
// SHA-256 of the definition approved (first seen, or approved by the owner),
// and the definition seen since that differs from it, pending approval.
// ---------------------------------------------------------------------------

const TOOL_PINS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tool_pins (
    route              TEXT NOT NULL,
    tool               TEXT NOT NULL,
    hash               TEXT NOT NULL,
    definition         TEXT NOT NULL,
    pinned_at          INTEGER NOT NULL,
    pending_hash       TEXT,
    pending_definition TEXT,
    pending_since      INTEGER,
    PRIMARY KEY (route, tool)
);
";

/// One pinned tool of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPin {
    pub tool: String,
    /// Hex SHA-256 of the approved definition's canonical JSON.
    pub hash: String,
    /// The approved definition (canonical JSON).
    pub definition: String,
    pub pinned_at: i64,
    /// A differing definition seen since, waiting for the owner's approval.
    pub pending: Option<PendingChange>,
}

/// A tool definition that differs from the pinned one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    pub hash: String,
    pub definition: String,
    pub since: i64,
}

/// A pin replaced by an approved definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repinned {
    pub tool: String,
    pub old_hash: String,
    pub new_hash: String,
}

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

impl Store {
    /// Every pinned tool of a route, by name.
    pub fn tool_pins(&self, route: &str) -> Result<Vec<ToolPin>, RelayError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {PIN_COLUMNS} FROM tool_pins WHERE route = ?1 ORDER BY tool"
        ))?;
        let rows = stmt.query_map([route], row_to_pin)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// One pinned tool.
    pub fn tool_pin(&self, route: &str, tool: &str) -> Result<Option<ToolPin>, RelayError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {PIN_COLUMNS} FROM tool_pins WHERE route = ?1 AND tool = ?2"),
                [route, tool],
                row_to_pin,
            )
            .optional()?)
    }

    /// Pins a tool seen for the first time. False: it was already pinned
    /// (by a concurrent request, or another relay process).
    pub fn pin_tool(
        &self,
        route: &str,
        tool: &str,
        hash: &str,
        definition: &str,
    ) -> Result<bool, RelayError> {
        Ok(self.conn().execute(
            "INSERT INTO tool_pins (route, tool, hash, definition, pinned_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(route, tool) DO NOTHING",
            params![route, tool, hash, definition, now()],
        )? > 0)
    }

    /// Records a definition that differs from the pin. True only the first
    /// time this definition is recorded (so a change is reported once).
    pub fn note_tool_change(
        &self,
        route: &str,
        tool: &str,
        hash: &str,
        definition: &str,
    ) -> Result<bool, RelayError> {
        Ok(self.conn().execute(
            "UPDATE tool_pins SET pending_hash = ?3, pending_definition = ?4, pending_since = ?5
             WHERE route = ?1 AND tool = ?2 AND hash != ?3
               AND (pending_hash IS NULL OR pending_hash != ?3)",
            params![route, tool, hash, definition, now()],
        )? > 0)
    }

    /// Forgets the pending change of a tool that is back to its pinned
    /// definition. True if there was one.
    pub fn clear_tool_change(
        &self,
        route: &str,
        tool: &str,
        hash: &str,
    ) -> Result<bool, RelayError> {
        Ok(self.conn().execute(
            "UPDATE tool_pins SET pending_hash = NULL, pending_definition = NULL, pending_since = NULL
             WHERE route = ?1 AND tool = ?2 AND hash = ?3 AND pending_hash IS NOT NULL",
            params![route, tool, hash],
        )? > 0)
    }

    /// Whether calls to a tool wait for the owner's approval of a change.
    pub fn tool_change_pending(&self, route: &str, tool: &str) -> Result<bool, RelayError> {
        // On every tool call: a cached statement, not SQL parsed each time.
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT 1 FROM tool_pins WHERE route = ?1 AND tool = ?2 AND pending_hash IS NOT NULL",
            )
            .and_then(|mut stmt| stmt.query_row([route, tool], |_| Ok(())))
            .optional()?
            .is_some())
    }

    /// Pins a new definition the owner approved as it was seen. `None`: it
    /// was pinned already (nothing changed).
    pub fn repin_tool(
        &self,
        route: &str,
        tool: &str,
        hash: &str,
        definition: &str,
    ) -> Result<Option<Repinned>, RelayError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let old: Option<String> = tx
            .query_row(
                "SELECT hash FROM tool_pins WHERE route = ?1 AND tool = ?2",
                [route, tool],
                |r| r.get(0),
            )
            .optional()?;
        if old.as_deref() == Some(hash) {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO tool_pins (route, tool, hash, definition, pinned_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(route, tool) DO UPDATE SET hash = ?3, definition = ?4, pinned_at = ?5,
               pending_hash = NULL, pending_definition = NULL, pending_since = NULL",
            params![route, tool, hash, definition, now()],
        )?;
        tx.commit()?;
        Ok(Some(Repinned {
            tool: tool.to_owned(),
            old_hash: old.unwrap_or_default(),
            new_hash: hash.to_owned(),
        }))
    }

    /// Approves the pending changes of a route (of one tool, or all): their
    /// definitions become the pins.
    pub fn approve_tool_changes(
        &self,
        route: &str,
        tool: Option<&str>,
    ) -> Result<Vec<Repinned>, RelayError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
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
            params![route, tool, now()],
        )?;
        tx.commit()?;
        Ok(approved)
    }
}

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

/// Creates `path` with mode 0600, or sets an existing one's to 0600.
fn private_db(path: &Path) -> Result<(), RelayError> {
    if path.exists() {
        return chmod_private(path, true);
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map_err(|source| RelayError::File {
        what: "cannot create",
        path: path.to_path_buf(),
        source,
    })?;
    // The mode given at creation is masked by the umask, never widened;
    // set it exactly all the same.
    chmod_private(path, true)
}

/// Sets `path`'s mode to 0600; an error if that fails (a missing file is
/// one only when `must_exist`).
#[cfg(unix)]
fn chmod_private(path: &Path, must_exist: bool) -> Result<(), RelayError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        Ok(()) => Ok(()),
        Err(e) if !must_exist && e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RelayError::File {
            what: "cannot make private (chmod 600)",
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(not(unix))]
fn chmod_private(_path: &Path, _must_exist: bool) -> Result<(), RelayError> {
    Ok(())
}

#[cfg(unix)]
fn restrict_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

#[cfg(not(unix))]
fn restrict_dir(_dir: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_claims_at_most_max_routes() {
        let (s, dir) = store();
        assert_eq!(
            s.claim_route_capped("a", "o@x", 2).expect("claim"),
            RouteClaim::Granted
        );
        assert_eq!(
            s.claim_route_capped("b", "o@x", 2).expect("claim"),
            RouteClaim::Granted
        );
        assert_eq!(
            s.claim_route_capped("c", "o@x", 2).expect("claim"),
            RouteClaim::TooMany { max: 2 }
        );
        // Routes already held still are; other owners are not affected.
        assert_eq!(
            s.claim_route_capped("a", "o@x", 2).expect("claim"),
            RouteClaim::Granted
        );
        assert_eq!(
            s.claim_route_capped("c", "p@x", 2).expect("claim"),
            RouteClaim::Granted
        );
        assert!(s.release_route("b").expect("release"));
        assert_eq!(
            s.claim_route_capped("d", "o@x", 2).expect("claim"),
            RouteClaim::Granted
        );
        assert_eq!(s.route_owner("c").expect("owner").as_deref(), Some("p@x"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_database_files_are_private_and_a_failed_chmod_is_an_error() {
        use std::os::unix::fs::PermissionsExt;
        let (store, dir) = store();
        for name in ["relay.db", "relay.db-wal", "relay.db-shm"] {
            let mode = std::fs::metadata(dir.join(name))
                .expect(name)
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        drop(store);
        // procfs refuses chmod, even to root.
        let err = chmod_private(Path::new("/proc/self/status"), true).expect_err("chmod refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn store() -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!("dbr-store-{}", token::random_hex(6)));
        (Store::open(&dir).expect("open"), dir)
    }

    #[test]
    fn tokens_live_and_die() {
        let (s, dir) = store();
        let (rec, secret) = s
            .create_token(TokenKind::Client, "a@x", "cli", None)
            .expect("create");
        assert_eq!(s.verify(secret.expose()).expect("valid").id, rec.id);
        assert_eq!(s.verify("dbct_nope"), Err(TokenRejection::Unknown));
        let (new, new_secret) = s
            .rotate_token(&rec.id, Duration::from_secs(3600), None)
            .expect("rotate");
        // Both valid during the grace period.
        assert!(s.verify(secret.expose()).is_ok());
        assert!(s.verify(new_secret.expose()).is_ok());
        assert_eq!(
            s.token(&rec.id).expect("get").expect("some").replaced_by,
            Some(new.id.clone())
        );
        s.revoke_token(&rec.id).expect("revoke");
        assert_eq!(s.verify(secret.expose()), Err(TokenRejection::Revoked));
        assert!(matches!(
            s.revoke_token(&rec.id),
            Err(RelayError::AlreadyRevoked(_))
        ));
        // A zero grace expires the old token at once.
        let (_n2, _s2) = s
            .rotate_token(&new.id, Duration::ZERO, None)
            .expect("rotate");
        assert_eq!(s.verify(new_secret.expose()), Err(TokenRejection::Expired));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn routes_belong_to_their_first_owner() {
        let (s, dir) = store();
        assert_eq!(
            s.claim_route("db", "a@x").expect("claim"),
            RouteClaim::Granted
        );
        assert_eq!(
            s.claim_route("db", "a@x").expect("claim"),
            RouteClaim::Granted
        );
        assert_eq!(
            s.claim_route("db", "b@x").expect("claim"),
            RouteClaim::Taken {
                owner: "a@x".into()
            }
        );
        assert!(s.release_route("db").expect("release"));
        assert_eq!(
            s.claim_route("db", "b@x").expect("claim"),
            RouteClaim::Granted
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn tool_pins_record_changes_once_and_survive_a_reopen() {
        let (s, dir) = store();
        s.claim_route("db", "a@x").expect("claim");
        assert!(s.pin_tool("db", "t", "h1", "{}").expect("pin"));
        assert!(
            !s.pin_tool("db", "t", "h2", "{}").expect("pin"),
            "first sight only"
        );
        assert!(!s.tool_change_pending("db", "t").expect("pending"));
        // A change is recorded once, a further change again.
        assert!(s
            .note_tool_change("db", "t", "h2", "{\"d\":2}")
            .expect("note"));
        assert!(!s
            .note_tool_change("db", "t", "h2", "{\"d\":2}")
            .expect("note"));
        assert!(
            !s.note_tool_change("db", "t", "h1", "{}").expect("note"),
            "the pin is no change"
        );
        assert!(s.tool_change_pending("db", "t").expect("pending"));
        assert!(!s.tool_change_pending("other", "t").expect("pending"));
        // Reopening (a restart) keeps it all; the schema is created idempotently.
        drop(s);
        let s = Store::open(&dir).expect("reopen");
        let pins = s.tool_pins("db").expect("pins");
        assert_eq!(pins.len(), 1);
        assert_eq!(pins[0].hash, "h1");
        assert_eq!(
            pins[0].pending.as_ref().map(|p| p.hash.as_str()),
            Some("h2")
        );
        // Approval makes the pending definition the pin.
        assert!(s
            .approve_tool_changes("db", Some("other"))
            .expect("approve")
            .is_empty());
        let approved = s.approve_tool_changes("db", None).expect("approve");
        assert_eq!(
            approved,
            [Repinned {
                tool: "t".into(),
                old_hash: "h1".into(),
                new_hash: "h2".into()
            }]
        );
        let pin = s.tool_pin("db", "t").expect("pin").expect("some");
        assert_eq!(
            (pin.hash.as_str(), pin.definition.as_str(), pin.pending),
            ("h2", "{\"d\":2}", None)
        );
        // A revert clears a pending change; a re-pin replaces the pin.
        assert!(s.note_tool_change("db", "t", "h3", "{}").expect("note"));
        assert!(s.clear_tool_change("db", "t", "h2").expect("clear"));
        assert!(!s.tool_change_pending("db", "t").expect("pending"));
        assert_eq!(s.repin_tool("db", "t", "h2", "{}").expect("repin"), None);
        let r = s
            .repin_tool("db", "t", "h4", "{}")
            .expect("repin")
            .expect("changed");
        assert_eq!((r.old_hash.as_str(), r.new_hash.as_str()), ("h2", "h4"));
        // Releasing the route forgets its pins.
        assert!(s.release_route("db").expect("release"));
        assert!(s.tool_pins("db").expect("pins").is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
