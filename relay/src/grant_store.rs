//! The grants side of the embedded store: what route owners shared with
//! peers (`agent share`). The gateway asks for a route's live grants on every
//! request, so a revoked or expired grant ends access on the next one.
//!
//! Grants change rarely, so a route's grants are read from SQLite once and
//! kept ([`GrantCache`]); expiry is checked at each request against the
//! cached records. Every write through this store (create, revoke, a route
//! released or claimed) forgets the route's entry once it has committed, so
//! the next request reads it again. The only other process that changes
//! grants is `relay route release`; a change by another process (seen
//! through `PRAGMA data_version`) forgets every entry, within
//! `--revocation-check-interval`, and the route it released is refused
//! before its grants are read anyway (no owner).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, OptionalExtension};

use crate::error::RelayError;
use crate::store::{now, Store};
use crate::token;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS route_grants (
    id         TEXT PRIMARY KEY,
    route      TEXT NOT NULL,
    grantee    TEXT NOT NULL,
    tools      TEXT,
    read_only  INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    resources  TEXT NOT NULL DEFAULT '[]',
    prompts    TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS route_grants_route ON route_grants (route);
";

/// Brings a `route_grants` table of an older relay up to date, after
/// [`SCHEMA`]: grants made before grants named resources and prompts get
/// the columns. Such a grant that named no tools shared everything, and
/// keeps every resource and prompt (`*`); one that named tools gets none,
/// as a grant made now without `--resources` and `--prompts`.
pub fn migrate(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let has_resources: bool = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('route_grants') WHERE name = 'resources'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if has_resources {
        return Ok(());
    }
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         ALTER TABLE route_grants ADD COLUMN resources TEXT NOT NULL DEFAULT '[]';
         ALTER TABLE route_grants ADD COLUMN prompts TEXT NOT NULL DEFAULT '[]';
         UPDATE route_grants SET resources = '[\"*\"]', prompts = '[\"*\"]' WHERE tools IS NULL;
         COMMIT;",
    )
}

/// One grant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub id: String,
    pub route: String,
    /// `bob@example.com` or `@example.com` (lowercased).
    pub grantee: String,
    /// The only tools the grantee may call; `None`: any.
    pub tools: Option<Vec<String>>,
    /// The resources the grantee may read (URI patterns); empty: none.
    pub resources: Vec<String>,
    /// The prompts the grantee may get (name patterns); empty: none.
    pub prompts: Vec<String>,
    pub read_only: bool,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// A grant to record.
pub struct NewGrant<'a> {
    pub route: &'a str,
    pub grantee: &'a str,
    pub tools: Option<&'a [String]>,
    pub resources: &'a [String],
    pub prompts: &'a [String],
    pub read_only: bool,
    pub created_by: &'a str,
    pub expires_at: Option<i64>,
}

impl GrantRecord {
    /// The grant as the policy engine takes it.
    pub fn to_policy(&self) -> Result<policy::Grant, policy::PolicyError> {
        let grant = policy::Grant {
            id: self.id.clone(),
            grantee: policy::Grantee::parse(&self.grantee)?,
            tools: self.tools.clone(),
            resources: self.resources.clone(),
            prompts: self.prompts.clone(),
            read_only: self.read_only,
            expires_at: self.expires_at,
        };
        grant.check()?;
        Ok(grant)
    }

    /// The grant as the agent is told it.
    pub fn to_wire(&self) -> protocol::RouteGrant {
        protocol::RouteGrant {
            id: self.id.clone(),
            with: self.grantee.clone(),
            tools: self.tools.clone(),
            read_only: self.read_only,
            expires_at: self.expires_at,
            resources: self.resources.clone(),
            prompts: self.prompts.clone(),
        }
    }
}

/// Most routes whose grants are kept; emptied when full.
const GRANT_CACHE_ROUTES: usize = 4096;

/// Each route's grants that are not revoked (expired ones too: expiry is
/// checked per request), as last read from SQLite.
#[derive(Default)]
pub struct GrantCache {
    routes: Mutex<HashMap<String, Arc<[GrantRecord]>>>,
}

impl GrantCache {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<[GrantRecord]>>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets what is kept for `route` (its grants changed).
    pub fn forget(&self, route: &str) {
        self.lock().remove(route);
    }

    /// Forgets everything (another process changed the store).
    pub fn forget_all(&self) {
        self.lock().clear();
    }
}

const COLUMNS: &str =
    "id, route, grantee, tools, read_only, created_by, created_at, expires_at, resources, prompts";

/// Column `at`, a JSON list of strings.
fn json_list(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Vec<String>> {
    let json: String = r.get(at)?;
    serde_json::from_str(&json).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(at, rusqlite::types::Type::Text, e.into())
    })
}

fn row_to_grant(r: &rusqlite::Row<'_>) -> rusqlite::Result<GrantRecord> {
    let tools: Option<String> = r.get(3)?;
    let tools = match tools {
        None => None,
        Some(json) => Some(serde_json::from_str(&json).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into())
        })?),
    };
    let resources = json_list(r, 8)?;
    let prompts = json_list(r, 9)?;
    Ok(GrantRecord {
        id: r.get(0)?,
        route: r.get(1)?,
        grantee: r.get(2)?,
        tools,
        resources,
        prompts,
        read_only: r.get(4)?,
        created_by: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
    })
}

impl Store {
    /// Records a grant; returns it with its new id.
    pub fn create_grant(&self, grant: &NewGrant<'_>) -> Result<GrantRecord, RelayError> {
        let tools = grant
            .tools
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| RelayError::Config(e.to_string()))?;
        let list =
            |l: &[String]| serde_json::to_string(l).map_err(|e| RelayError::Config(e.to_string()));
        let (resources, prompts) = (list(grant.resources)?, list(grant.prompts)?);
        let record = GrantRecord {
            id: token::random_hex(6),
            route: grant.route.to_owned(),
            grantee: grant.grantee.to_owned(),
            tools: grant.tools.map(<[String]>::to_vec),
            resources: grant.resources.to_vec(),
            prompts: grant.prompts.to_vec(),
            read_only: grant.read_only,
            created_by: grant.created_by.to_owned(),
            created_at: now(),
            expires_at: grant.expires_at,
        };
        self.conn().execute(
            "INSERT INTO route_grants (id, route, grantee, tools, read_only, created_by,
                                       created_at, expires_at, resources, prompts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                record.id,
                record.route,
                record.grantee,
                tools,
                record.read_only,
                record.created_by,
                record.created_at,
                record.expires_at,
                resources,
                prompts
            ],
        )?;
        self.grant_cache.forget(&record.route);
        Ok(record)
    }

    /// The grants of a route in force at `now` (not revoked, not expired),
    /// oldest first.
    pub fn live_grants(&self, route: &str, now: i64) -> Result<Vec<GrantRecord>, RelayError> {
        let live = |all: &[GrantRecord]| {
            all.iter()
                .filter(|g| g.expires_at.is_none_or(|t| t > now))
                .cloned()
                .collect()
        };
        // The cache stays locked while a missing entry is read, so a write
        // that commits meanwhile forgets the entry after it is stored.
        let mut cache = self.grant_cache.lock();
        if let Some(all) = cache.get(route) {
            return Ok(live(all));
        }
        let all: Arc<[GrantRecord]> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM route_grants
                 WHERE route = ?1 AND revoked_at IS NULL
                 ORDER BY rowid"
            ))?;
            let rows = stmt.query_map(params![route], row_to_grant)?;
            rows.collect::<Result<Vec<_>, _>>()?.into()
        };
        let granted = live(&all);
        if cache.len() >= GRANT_CACHE_ROUTES {
            cache.clear();
        }
        cache.insert(route.to_owned(), all);
        Ok(granted)
    }

    /// Every grant not revoked on the routes `owner` owns (expired ones
    /// too), optionally of one route.
    pub fn owner_grants(
        &self,
        owner: &str,
        route: Option<&str>,
    ) -> Result<Vec<GrantRecord>, RelayError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {} FROM route_grants g JOIN routes r ON r.name = g.route
             WHERE r.owner = ?1 AND (?2 IS NULL OR g.route = ?2) AND g.revoked_at IS NULL
             ORDER BY g.route, g.rowid",
            COLUMNS
                .split(", ")
                .map(|c| format!("g.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
        let rows = stmt.query_map(params![owner, route], row_to_grant)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// One grant that is not revoked.
    pub fn grant(&self, id: &str) -> Result<Option<GrantRecord>, RelayError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM route_grants WHERE id = ?1 AND revoked_at IS NULL"),
                [id],
                row_to_grant,
            )
            .optional()?)
    }

    /// Revokes a grant. False if there was no such live grant.
    pub fn revoke_grant(&self, id: &str) -> Result<bool, RelayError> {
        // The connection's lock ends with the statement.
        let route: Option<String> = self
            .conn()
            .query_row(
                "UPDATE route_grants SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL
                 RETURNING route",
                params![id, now()],
                |r| r.get(0),
            )
            .optional()?;
        match route {
            Some(route) => {
                self.grant_cache.forget(&route);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_live_until_revoked_or_expired_and_go_with_their_route() {
        let dir = std::env::temp_dir().join(format!("dbr-grants-{}", token::random_hex(6)));
        let s = Store::open(&dir).expect("open");
        s.claim_route("db", "a@x").expect("claim");
        let tools = vec!["read_query".to_owned()];
        let memo = vec!["memo://*".to_owned()];
        let g = s
            .create_grant(&NewGrant {
                route: "db",
                grantee: "b@x",
                tools: Some(&tools),
                resources: &[],
                prompts: &[],
                read_only: true,
                created_by: "a@x",
                expires_at: Some(now() + 60),
            })
            .expect("create");
        let short = s
            .create_grant(&NewGrant {
                route: "db",
                grantee: "@y",
                tools: None,
                resources: &memo,
                prompts: &[],
                read_only: false,
                created_by: "a@x",
                expires_at: Some(now() + 5),
            })
            .expect("create");
        let t = now();
        assert_eq!(
            s.live_grants("db", t).expect("live"),
            [g.clone(), short.clone()]
        );
        // Expired at decision time, still listed for its owner.
        assert_eq!(
            s.live_grants("db", t + 10).expect("live"),
            std::slice::from_ref(&g)
        );
        assert_eq!(s.owner_grants("a@x", None).expect("list").len(), 2);
        assert!(s.owner_grants("b@x", None).expect("list").is_empty());
        assert!(s.revoke_grant(&g.id).expect("revoke"));
        assert!(!s.revoke_grant(&g.id).expect("revoke again"));
        assert_eq!(s.grant(&g.id).expect("get"), None);
        assert_eq!(s.live_grants("db", t).expect("live"), [short]);
        // A released route's grants do not pass to its next owner.
        assert!(s.release_route("db").expect("release"));
        assert!(s.live_grants("db", t).expect("live").is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn grants_of_an_older_relay_get_resources_and_prompts_by_what_they_shared() {
        let dir = std::env::temp_dir().join(format!("dbr-grants-old-{}", token::random_hex(6)));
        std::fs::create_dir_all(&dir).expect("dir");
        {
            // The table as the relay before grants named resources made it.
            let conn = rusqlite::Connection::open(dir.join("relay.db")).expect("open");
            conn.execute_batch(
                "CREATE TABLE route_grants (
                    id TEXT PRIMARY KEY, route TEXT NOT NULL, grantee TEXT NOT NULL,
                    tools TEXT, read_only INTEGER NOT NULL, created_by TEXT NOT NULL,
                    created_at INTEGER NOT NULL, expires_at INTEGER, revoked_at INTEGER);
                 INSERT INTO route_grants VALUES
                    ('aa', 'db', 'b@x', '[\"read_query\"]', 1, 'a@x', 1, NULL, NULL),
                    ('bb', 'db', '@y', NULL, 0, 'a@x', 2, NULL, NULL);",
            )
            .expect("old table");
        }
        let s = Store::open(&dir).expect("open migrates");
        let live = s.live_grants("db", now()).expect("live");
        let by_id = |id: &str| live.iter().find(|g| g.id == id).cloned().expect("grant");
        // Named tools: no resource, no prompt. Everything shared: all of them.
        assert_eq!(
            (by_id("aa").resources, by_id("aa").prompts),
            (vec![], vec![])
        );
        let all = vec!["*".to_owned()];
        assert_eq!(
            (by_id("bb").resources, by_id("bb").prompts),
            (all.clone(), all)
        );
        drop(s);
        // Opening again changes nothing.
        let s = Store::open(&dir).expect("open again");
        assert_eq!(s.live_grants("db", now()).expect("live"), live);
        let _ = std::fs::remove_dir_all(dir);
    }
}
