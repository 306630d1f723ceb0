//! The database behind the built-in SQLite MCP server ([`crate::upstream::sqlite::server`]).
//!
//! What a statement may do is decided by SQLite itself, never by looking at
//! the SQL text:
//!
//! * every statement is compiled under an **authorizer** that sees each
//!   action SQLite is about to take (read a column, insert into a table,
//!   create a table, attach a file, run a pragma, …) and refuses anything
//!   outside what the tool is for;
//! * `read_query` also requires `sqlite3_stmt_readonly()` and runs on a
//!   separate connection opened with `SQLITE_OPEN_READ_ONLY` and
//!   `PRAGMA query_only`, so even a gap in the authorizer rules could not
//!   write;
//! * one statement per call (a second statement is refused, not ignored);
//! * `--read-only` opens the file read-only and has no writing connection
//!   at all.
//!
//! Calls block (SQLite is synchronous): run them with `spawn_blocking`, or,
//! for a read, first [`Run::Now`] on the caller's thread for a short slice
//! (most reads end within it; one that does not is handed to the pool). Each
//! call is bounded ([`Limits`]): in time (a progress handler interrupts it),
//! in rows and in the size of its answer, and every value SQLite makes is
//! bounded in length (`SQLITE_LIMIT_LENGTH`), so that no query can take the
//! laptop's memory (`SELECT zeroblob(1e8)` is refused before it allocates).
//! Reads run on a small pool of connections ([`crate::upstream::sqlite::pool`]);
//! writes are serialized on one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::ffi::ErrorCode;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Statement};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::upstream::sqlite::pool::{ConnPool, Pooled};

/// The sample dataset written into a new database file.
const SAMPLE_SQL: &str = include_str!("sample.sql");

/// How long SQLite waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a database call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    #[error("cannot open the database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the database {} does not exist (without --read-only it is created with sample data)", .0.display())]
    Missing(PathBuf),
    #[error("cannot create the sample database {}: {reason}", path.display())]
    CreateSample { path: PathBuf, reason: String },
    /// The statement does something this call is not for.
    #[error("{0}")]
    Refused(String),
    /// A writing call on a database opened with `--read-only`.
    #[error("the database is opened read-only (the agent runs with --read-only): {0} is disabled")]
    ReadOnly(&'static str),
    #[error("no such table or view: {0}")]
    NoSuchTable(String),
    #[error("the statement was stopped after {} (the agent's time limit per query, --sqlite-timeout)", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("the query returns more than {0} rows (the agent's bound, --sqlite-max-rows): add a LIMIT, or aggregate")]
    TooManyRows(usize),
    #[error("the answer is over {0} bytes (the agent's bound, --sqlite-max-answer-bytes): select fewer rows or columns, or shorten long values with substr()")]
    AnswerTooLarge(usize),
    #[error("a value (string, blob or row) would be over {0} bytes (the agent's bound, --sqlite-max-value-bytes)")]
    ValueTooLarge(usize),
    #[error("no reading connection became free within {} (all --sqlite-readers are busy, or this caller already holds its share of them): try again", humantime::format_duration(*.0))]
    Busy(Duration),
    #[error("the writing connection did not become free within {} (writes run one at a time and another is running; --sqlite-timeout): try again", humantime::format_duration(*.0))]
    WriterBusy(Duration),
    /// A read asked to run [`Run::Now`] that could not: no reading
    /// connection was free at once, or it would have waited for a lock or
    /// run past its slice. Nothing was returned; run it again
    /// [`Run::Pooled`]. Never the outcome of a pooled call.
    #[error("the read could not run at once; run it on the blocking pool")]
    NotNow,
    /// SQLite's own error, with its message.
    #[error("SQLite error: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// Bounds on one call (each an `agent connect` flag).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rows returned by one query at most; a query that returns more is an
    /// error ([`SqliteError::TooManyRows`]).
    pub max_rows: usize,
    /// How long one statement may run, and how long a call waits for a
    /// reading connection.
    pub timeout: Duration,
    /// The longest string or blob (and row) SQLite may make:
    /// `SQLITE_LIMIT_LENGTH` on every connection.
    pub max_value_bytes: usize,
    /// The largest answer (the rows as JSON, roughly) one call may build.
    pub max_answer_bytes: usize,
    /// Reading connections (at least 1). One caller holds at most half of
    /// them at once.
    pub readers: usize,
    /// Calls one caller may have in flight at once (at least 1); more are
    /// refused (see [`crate::upstream::sqlite::server`]).
    pub max_calls_per_identity: usize,
    /// MCP sessions one caller may hold at once (at least 1); more are
    /// refused (see [`crate::upstream::mcp_sessions`]).
    pub max_sessions_per_identity: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rows: 1000,
            timeout: Duration::from_secs(30),
            max_value_bytes: 1024 * 1024,
            max_answer_bytes: 4 * 1024 * 1024,
            readers: 4,
            max_calls_per_identity: 8,
            max_sessions_per_identity: 32,
        }
    }
}

/// Rows of a query, each a JSON object keyed by column name.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rows {
    /// Column names, in order (a repeated name gets a `_2`, `_3`… suffix).
    pub columns: Vec<String>,
    pub rows: Vec<Map<String, Value>>,
    pub row_count: usize,
}

/// What a data write did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WriteOutcome {
    pub affected_rows: u64,
    /// The rows of a `RETURNING` clause, if the statement had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub returning: Option<Rows>,
}

/// The tables and views of the database (SQLite's internal tables left out).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Tables {
    pub tables: Vec<String>,
    pub views: Vec<String>,
}

/// The schema of one table or view.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TableDescription {
    pub name: String,
    /// `table` or `view`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The `CREATE` statement as stored by SQLite.
    pub sql: Option<String>,
    /// `PRAGMA table_info`: cid, name, type, notnull, dflt_value, pk.
    pub columns: Vec<Map<String, Value>>,
    /// `PRAGMA foreign_key_list` (tables only).
    pub foreign_keys: Vec<Map<String, Value>>,
    /// `PRAGMA index_list` (tables only).
    pub indexes: Vec<Map<String, Value>>,
    /// Number of rows (tables only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_count: Option<i64>,
}

/// What a statement is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// One read-only query.
    Read,
    /// One INSERT, UPDATE or DELETE (with optional RETURNING).
    Write,
    /// One CREATE TABLE.
    CreateTable,
}

impl Purpose {
    fn refusal(self, what: &str) -> String {
        match self {
            Purpose::Read => format!(
                "read_query runs one read-only statement (SELECT, WITH … SELECT, VALUES): {what} is not allowed"
            ),
            Purpose::Write => format!(
                "write_query runs one INSERT, UPDATE or DELETE statement: {what} is not allowed (tables are created with create_table; schema changes, ATTACH, PRAGMA and transactions are refused)"
            ),
            Purpose::CreateTable => {
                format!("create_table runs one CREATE TABLE statement: {what} is not allowed")
            }
        }
    }
}

/// What the authorizer saw while a statement was compiled.
#[derive(Debug, Default)]
struct Facts {
    /// A top-level SELECT.
    selects: bool,
    /// A top-level INSERT, UPDATE or DELETE on a table of `main`.
    writes: bool,
    /// The table a top-level CREATE TABLE creates.
    created: Option<String>,
    /// The first action refused, described.
    denied: Option<String>,
}

/// Pragmas that only describe the schema, whatever their argument.
const INTROSPECTION_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "collation_list",
    "function_list",
    "module_list",
    "pragma_list",
];

/// SQLite's own tables (`sqlite_master`, `sqlite_sequence`, `sqlite_stat1`…).
fn is_internal(table: &str) -> bool {
    table
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("sqlite_"))
}

/// A readable name for an action the authorizer refused.
fn describe(action: &AuthAction<'_>) -> String {
    use AuthAction as A;
    match action {
        A::Insert { table_name } => format!("INSERT into {table_name}"),
        A::Update { table_name, .. } => format!("UPDATE of {table_name}"),
        A::Delete { table_name } => format!("DELETE from {table_name}"),
        A::CreateTable { table_name } => format!("CREATE TABLE {table_name}"),
        A::CreateTempTable { table_name } => format!("CREATE TEMP TABLE {table_name}"),
        A::CreateIndex { index_name, .. } | A::CreateTempIndex { index_name, .. } => {
            format!("CREATE INDEX {index_name}")
        }
        A::CreateView { view_name } | A::CreateTempView { view_name } => {
            format!("CREATE VIEW {view_name}")
        }
        A::CreateTrigger { trigger_name, .. } | A::CreateTempTrigger { trigger_name, .. } => {
            format!("CREATE TRIGGER {trigger_name}")
        }
        A::DropTable { table_name } | A::DropTempTable { table_name } => {
            format!("DROP TABLE {table_name}")
        }
        A::DropIndex { index_name, .. } | A::DropTempIndex { index_name, .. } => {
            format!("DROP INDEX {index_name}")
        }
        A::DropView { view_name } | A::DropTempView { view_name } => {
            format!("DROP VIEW {view_name}")
        }
        A::DropTrigger { trigger_name, .. } | A::DropTempTrigger { trigger_name, .. } => {
            format!("DROP TRIGGER {trigger_name}")
        }
        A::AlterTable { table_name, .. } => format!("ALTER TABLE {table_name}"),
        A::Attach { .. } => "ATTACH".into(),
        A::Detach { .. } => "DETACH".into(),
        A::Pragma { pragma_name, .. } => format!("PRAGMA {pragma_name}"),
        A::Transaction { .. } => "a transaction statement (BEGIN/COMMIT/ROLLBACK)".into(),
        A::Savepoint { .. } => "SAVEPOINT/RELEASE".into(),
        A::Analyze { .. } => "ANALYZE".into(),
        A::Reindex { .. } => "REINDEX".into(),
        A::CreateVtable { table_name, .. } => format!("CREATE VIRTUAL TABLE {table_name}"),
        A::DropVtable { table_name, .. } => format!("DROP of virtual table {table_name}"),
        other => format!("{other:?}"),
    }
}

/// The authorizer's rule: may a statement compiled for `purpose` take this
/// action? Records what it saw in `facts`.
fn authorize(purpose: Purpose, ctx: &AuthContext<'_>, facts: &mut Facts) -> Authorization {
    use AuthAction as A;
    let top_level = ctx.accessor.is_none();
    let in_main = ctx.database_name == Some("main");
    let allowed = match (purpose, &ctx.action) {
        // Reading is what every purpose may do.
        (_, A::Select) => {
            facts.selects |= top_level;
            true
        }
        (_, A::Read { .. } | A::Function { .. } | A::Recursive) => true,
        (
            Purpose::Write,
            A::Insert { table_name } | A::Update { table_name, .. } | A::Delete { table_name },
        ) => {
            let ok = in_main && !is_internal(table_name);
            facts.writes |= ok && top_level;
            ok
        }
        // AUTOINCREMENT also creates SQLite's own sqlite_sequence table.
        (Purpose::CreateTable, A::CreateTable { table_name }) if in_main && top_level => {
            if !is_internal(table_name) {
                facts.created = Some((*table_name).to_owned());
            }
            true
        }
        // The table-valued pragma functions (`SELECT * FROM
        // pragma_table_info('t')`) run their pragma when the query runs. A
        // top-level PRAGMA statement is still refused: it is not a SELECT.
        (_, A::Pragma { pragma_name, .. }) => INTROSPECTION_PRAGMAS
            .iter()
            .any(|p| p.eq_ignore_ascii_case(pragma_name)),
        // CREATE TABLE records the new table in the schema table.
        (Purpose::CreateTable, A::Insert { table_name } | A::Update { table_name, .. })
            if in_main && table_name.eq_ignore_ascii_case("sqlite_master") =>
        {
            true
        }
        _ => false,
    };
    if allowed {
        Authorization::Allow
    } else {
        if facts.denied.is_none() {
            facts.denied = Some(describe(&ctx.action));
        }
        Authorization::Deny
    }
}

/// Where and how long a read runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// On the blocking pool: waits (up to the time limit) for a reading
    /// connection, then runs to its end or the time limit.
    Pooled,
    /// On the calling thread (the agent's network thread), for at most this
    /// long: only if a reading connection within the caller's share is free
    /// at once, and never waiting for a lock. A read that cannot, or that
    /// runs past the slice, is interrupted and gives [`SqliteError::NotNow`]
    /// (a read has no effect, so running it again is safe).
    Now(Duration),
}

/// The database: read-only connections for queries and, unless the agent
/// runs with `--read-only`, one more for writes.
pub struct SqliteDb {
    path: PathBuf,
    readers: ConnPool,
    /// The writing connection (a pool of one), unless read-only.
    writer: Option<ConnPool>,
    limits: Limits,
    created: bool,
}

impl std::fmt::Debug for SqliteDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDb")
            .field("path", &self.path)
            .field("read_only", &self.is_read_only())
            .finish()
    }
}

impl SqliteDb {
    /// Opens `path`. When it does not exist it is first created with the
    /// sample dataset (not with `read_only`: then it is an error).
    pub fn open(path: &Path, read_only: bool, limits: Limits) -> Result<SqliteDb, SqliteError> {
        let mut created = false;
        if !path.exists() {
            if read_only {
                return Err(SqliteError::Missing(path.to_path_buf()));
            }
            create_sample(path)?;
            created = true;
        }
        let open_err = |source| SqliteError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut readers = Vec::with_capacity(limits.readers.max(1));
        for _ in 0..limits.readers.max(1) {
            // No SQLITE_OPEN_URI: the file name is a file name, never options.
            let reader = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(open_err)?;
            configure(&reader, true, limits).map_err(open_err)?;
            // Fail now, not at the first call, if the file is not a database.
            reader
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(open_err)?;
            readers.push(reader);
        }
        let writer = if read_only {
            None
        } else {
            let w = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(open_err)?;
            configure(&w, false, limits).map_err(open_err)?;
            Some(ConnPool::new(vec![w]))
        };
        Ok(SqliteDb {
            path: path.to_path_buf(),
            readers: ConnPool::new(readers),
            writer,
            limits,
            created,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file was opened with `--read-only`.
    pub fn is_read_only(&self) -> bool {
        self.writer.is_none()
    }

    /// The bounds on each call.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether `open` created the file with the sample dataset.
    pub fn created_sample(&self) -> bool {
        self.created
    }

    /// How many reading connections there are.
    pub fn readers(&self) -> usize {
        self.readers.size()
    }

    /// A reading connection for `caller` (see [`crate::upstream::sqlite::pool`]),
    /// waiting for one at most the time limit ([`Run::Pooled`]) or not at
    /// all ([`Run::Now`]).
    fn reader(&self, caller: Option<&str>, run: Run) -> Result<Pooled<'_>, SqliteError> {
        match run {
            Run::Pooled => self
                .readers
                .take(caller, self.limits.timeout)
                .ok_or(SqliteError::Busy(self.limits.timeout)),
            Run::Now(_) => self
                .readers
                .take(caller, Duration::ZERO)
                .ok_or(SqliteError::NotNow),
        }
    }

    /// Runs `f` on a reading connection for `caller`, as `run` says, under
    /// the authorizer for reads and the time limit (see [`guarded`]).
    fn read<T>(
        &self,
        caller: Option<&str>,
        run: Run,
        f: impl FnOnce(&Connection, &Arc<Mutex<Facts>>) -> Result<T, SqliteError>,
    ) -> Result<T, SqliteError> {
        let mut conn = self.reader(caller, run)?;
        guarded(&mut conn, Purpose::Read, self.limits, run, f)
    }

    /// Runs one read-only statement and returns its rows. `caller` (who
    /// asks, when known) is held to its share of the reading connections;
    /// the read runs as `run` says.
    pub fn read_query(
        &self,
        caller: Option<&str>,
        sql: &str,
        run: Run,
    ) -> Result<Rows, SqliteError> {
        let limits = self.limits;
        self.read(caller, run, |conn, facts| {
            let mut stmt = prepare(conn, sql, Purpose::Read, facts)?;
            if !stmt.readonly() || !take(facts).selects {
                return Err(SqliteError::Refused(
                    Purpose::Read.refusal("a statement that is not a query (or that writes)"),
                ));
            }
            collect_rows(&mut stmt, limits)
        })
    }

    /// Runs one INSERT, UPDATE or DELETE.
    pub fn write_query(&self, sql: &str) -> Result<WriteOutcome, SqliteError> {
        let writer = self
            .writer
            .as_ref()
            .ok_or(SqliteError::ReadOnly("write_query"))?;
        let limits = self.limits;
        let mut conn = writer
            .take(None, limits.timeout)
            .ok_or(SqliteError::WriterBusy(limits.timeout))?;
        let run = Run::Pooled;
        guarded(&mut conn, Purpose::Write, limits, run, |conn, facts| {
            let mut stmt = prepare(conn, sql, Purpose::Write, facts)?;
            if stmt.readonly() || !take(facts).writes {
                return Err(SqliteError::Refused(Purpose::Write.refusal(
                    "a statement that does not change rows (use read_query for queries)",
                )));
            }
            if stmt.column_count() == 0 {
                let n = stmt.execute([])?;
                return Ok(WriteOutcome {
                    affected_rows: n as u64,
                    returning: None,
                });
            }
            let rows = collect_rows(&mut stmt, limits)?;
            drop(stmt);
            Ok(WriteOutcome {
                affected_rows: conn.changes(),
                returning: Some(rows),
            })
        })
    }

    /// Runs one CREATE TABLE; returns the new table's name.
    pub fn create_table(&self, sql: &str) -> Result<String, SqliteError> {
        let writer = self
            .writer
            .as_ref()
            .ok_or(SqliteError::ReadOnly("create_table"))?;
        let limits = self.limits;
        let mut conn = writer
            .take(None, limits.timeout)
            .ok_or(SqliteError::WriterBusy(limits.timeout))?;
        let run = Run::Pooled;
        guarded(
            &mut conn,
            Purpose::CreateTable,
            limits,
            run,
            |conn, facts| {
                let mut stmt = prepare(conn, sql, Purpose::CreateTable, facts)?;
                let Some(name) = take(facts).created else {
                    return Err(SqliteError::Refused(
                        Purpose::CreateTable.refusal("a statement that is not CREATE TABLE"),
                    ));
                };
                stmt.execute([])?;
                Ok(name)
            },
        )
    }

    /// The tables and views, by name (run as `run` says).
    pub fn list_tables(&self, caller: Option<&str>, run: Run) -> Result<Tables, SqliteError> {
        self.read(caller, run, |conn, facts| {
            let mut stmt = prepare(
                conn,
                "SELECT name, type FROM sqlite_master \
                 WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
                 ORDER BY name",
                Purpose::Read,
                facts,
            )?;
            let mut out = Tables {
                tables: Vec::new(),
                views: Vec::new(),
            };
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let name: String = row.get(0)?;
                let kind: String = row.get(1)?;
                if kind == "view" {
                    out.views.push(name);
                } else {
                    out.tables.push(name);
                }
            }
            Ok(out)
        })
    }

    /// The schema of one table or view. The name is only ever a bound
    /// parameter, or a quoted identifier once it is known to exist. Run as
    /// `run` says.
    pub fn describe_table(
        &self,
        caller: Option<&str>,
        table_name: &str,
        run: Run,
    ) -> Result<TableDescription, SqliteError> {
        self.read(caller, run, |conn, facts| {
            let found = {
                let mut stmt = prepare(
                    conn,
                    "SELECT name, type, sql FROM sqlite_master \
                     WHERE type IN ('table', 'view') AND name = ?1 COLLATE NOCASE \
                     ORDER BY name = ?1 DESC LIMIT 1",
                    Purpose::Read,
                    facts,
                )?;
                let mut rows = stmt.query([table_name])?;
                match rows.next()? {
                    Some(row) => Some((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Option<String>>(2)?,
                    )),
                    None => None,
                }
            };
            let Some((name, kind, sql)) = found else {
                return Err(SqliteError::NoSuchTable(table_name.to_owned()));
            };
            let pragma_rows = |conn: &Connection, facts: &Arc<Mutex<Facts>>, query: &str| {
                let mut stmt = prepare(conn, query, Purpose::Read, facts)?;
                let mut rows = stmt.query([name.as_str()])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(row_object(row, &dedup_names(row.as_ref()))?);
                }
                Ok::<_, SqliteError>(out)
            };
            let columns = pragma_rows(conn, facts, "SELECT * FROM pragma_table_info(?1)")?;
            let is_table = kind == "table";
            let (foreign_keys, indexes, row_count) = if is_table {
                let count_sql = format!("SELECT count(*) FROM main.{}", quote_identifier(&name));
                let count = prepare(conn, &count_sql, Purpose::Read, facts)?
                    .query_row([], |r| r.get::<_, i64>(0))?;
                (
                    pragma_rows(conn, facts, "SELECT * FROM pragma_foreign_key_list(?1)")?,
                    pragma_rows(conn, facts, "SELECT * FROM pragma_index_list(?1)")?,
                    Some(count),
                )
            } else {
                (Vec::new(), Vec::new(), None)
            };
            Ok(TableDescription {
                name,
                kind,
                sql,
                columns,
                foreign_keys,
                indexes,
                row_count,
            })
        })
    }
}

/// Per-connection settings.
fn configure(conn: &Connection, query_only: bool, limits: Limits) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // No string, blob or row longer than this: `zeroblob(1e8)`,
    // `randomblob`, `printf('%.*c', …)` and `group_concat` are refused before
    // they allocate.
    let max_value = i32::try_from(limits.max_value_bytes).unwrap_or(i32::MAX);
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, max_value)?;
    // Hostile schema objects (views, triggers) may not call risky functions,
    // and the schema cannot be corrupted through writable_schema and the like.
    conn.pragma_update(None, "trusted_schema", false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    if query_only {
        conn.pragma_update(None, "query_only", true)?;
    }
    Ok(())
}

fn take(facts: &Arc<Mutex<Facts>>) -> Facts {
    std::mem::take(&mut *facts.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Runs `f` with the authorizer for `purpose` and the time limit installed
/// (for [`Run::Now`], its slice, and no waiting for locks), and removes them
/// afterwards whatever happens.
fn guarded<T>(
    conn: &mut Connection,
    purpose: Purpose,
    limits: Limits,
    run: Run,
    f: impl FnOnce(&Connection, &Arc<Mutex<Facts>>) -> Result<T, SqliteError>,
) -> Result<T, SqliteError> {
    let facts = Arc::new(Mutex::new(Facts::default()));
    let seen = facts.clone();
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        let mut facts = seen.lock().unwrap_or_else(|p| p.into_inner());
        authorize(purpose, &ctx, &mut facts)
    }))?;
    let (limit, now) = match run {
        Run::Pooled => (limits.timeout, false),
        Run::Now(slice) => (slice.min(limits.timeout), true),
    };
    let started = Instant::now();
    let timed_out = Arc::new(AtomicBool::new(false));
    let flag = timed_out.clone();
    let progress = conn.progress_handler(
        1000,
        Some(move || {
            let over = started.elapsed() > limit;
            if over {
                flag.store(true, Ordering::Relaxed);
            }
            over
        }),
    );
    let busy = if now {
        conn.busy_timeout(Duration::ZERO)
    } else {
        Ok(())
    };
    let result = match progress.and(busy) {
        Ok(()) => f(conn, &facts),
        Err(e) => Err(e.into()),
    };
    if now {
        let _ = conn.busy_timeout(BUSY_TIMEOUT);
    }
    let _ = conn.progress_handler(0, None::<fn() -> bool>);
    let _ = conn.authorizer(None::<fn(AuthContext<'_>) -> Authorization>);
    match result {
        // Past its slice, or it would have waited for a lock: run it again
        // on the pool.
        Err(SqliteError::Sql(e))
            if now
                && (timed_out.load(Ordering::Relaxed)
                    || matches!(
                        e.sqlite_error_code(),
                        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    )) =>
        {
            tracing::trace!(error = %e, "read handed to the blocking pool");
            Err(SqliteError::NotNow)
        }
        Err(SqliteError::Sql(e)) if timed_out.load(Ordering::Relaxed) => {
            tracing::debug!(error = %e, "statement interrupted");
            Err(SqliteError::Timeout(limits.timeout))
        }
        Err(SqliteError::Sql(e)) if e.sqlite_error_code() == Some(ErrorCode::TooBig) => {
            tracing::debug!(error = %e, "value over the length limit");
            Err(SqliteError::ValueTooLarge(limits.max_value_bytes))
        }
        other => other,
    }
}

/// Compiles one statement under the authorizer (see [`guarded`]), turning
/// its refusals into a readable error.
fn prepare<'c>(
    conn: &'c Connection,
    sql: &str,
    purpose: Purpose,
    facts: &Arc<Mutex<Facts>>,
) -> Result<Statement<'c>, SqliteError> {
    // Facts from an earlier statement of the same call do not count.
    take(facts);
    match conn.prepare(sql) {
        // An empty statement (only comments) compiles to nothing: it is
        // read-only and does nothing, so every purpose refuses it below.
        Ok(stmt) => Ok(stmt),
        Err(e) => {
            if let Some(what) = take(facts).denied {
                return Err(SqliteError::Refused(purpose.refusal(&what)));
            }
            if matches!(e, rusqlite::Error::MultipleStatement) {
                return Err(SqliteError::Refused(
                    purpose.refusal("more than one statement"),
                ));
            }
            Err(e.into())
        }
    }
}

/// Column names, with repeats made unique (`id`, `id_2`…).
fn dedup_names(stmt: &Statement<'_>) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(stmt.column_count());
    for name in stmt.column_names() {
        let mut candidate = name.to_owned();
        let mut n = 2;
        while names.contains(&candidate) {
            candidate = format!("{name}_{n}");
            n += 1;
        }
        names.push(candidate);
    }
    names
}

/// The rows of `stmt`, within `limits`: more than `max_rows` rows, or an
/// answer over `max_answer_bytes` (counted as the rows' JSON, before any of
/// it is built), is an error.
fn collect_rows(stmt: &mut Statement<'_>, limits: Limits) -> Result<Rows, SqliteError> {
    let columns = dedup_names(stmt);
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    let mut answer_bytes = 0usize;
    while let Some(row) = rows.next()? {
        if out.len() == limits.max_rows {
            return Err(SqliteError::TooManyRows(limits.max_rows));
        }
        for (i, name) in columns.iter().enumerate() {
            answer_bytes = answer_bytes
                .saturating_add(name.len() + 4)
                .saturating_add(json_len(row.get_ref(i)?));
        }
        if answer_bytes > limits.max_answer_bytes {
            return Err(SqliteError::AnswerTooLarge(limits.max_answer_bytes));
        }
        out.push(row_object(row, &columns)?);
    }
    Ok(Rows {
        columns,
        row_count: out.len(),
        rows: out,
    })
}

/// About how many bytes `v` takes as JSON ([`to_json`]), without building it.
fn json_len(v: ValueRef<'_>) -> usize {
    match v {
        ValueRef::Null => 4,
        ValueRef::Integer(_) | ValueRef::Real(_) => 24,
        ValueRef::Text(t) => t.len() + 2,
        ValueRef::Blob(b) => b.len().saturating_mul(2) + 5,
    }
}

fn row_object(
    row: &rusqlite::Row<'_>,
    columns: &[String],
) -> Result<Map<String, Value>, SqliteError> {
    let mut obj = Map::with_capacity(columns.len());
    for (i, name) in columns.iter().enumerate() {
        obj.insert(name.clone(), to_json(row.get_ref(i)?));
    }
    Ok(obj)
}

/// A SQLite value as JSON. Blobs become `X'…'` hex literals (as SQL writes
/// them); infinities, which JSON lacks, become strings.
pub fn to_json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.to_string())),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::String(format!("X'{}'", hex::encode_upper(b))),
    }
}

/// `name` as a quoted SQL identifier: `"…"` with inner quotes doubled.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Writes the sample dataset to a new file at `path`, atomically: the file
/// appears complete or not at all.
fn create_sample(path: &Path) -> Result<(), SqliteError> {
    let fail = |reason: String| SqliteError::CreateSample {
        path: path.to_path_buf(),
        reason,
    };
    let mut partial = path.as_os_str().to_owned();
    partial.push(format!(".partial-{}", std::process::id()));
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    let build = || -> Result<(), rusqlite::Error> {
        let mut conn = Connection::open_with_flags(
            &partial,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let tx = conn.transaction()?;
        tx.execute_batch(SAMPLE_SQL)?;
        tx.commit()?;
        conn.close().map_err(|(_, e)| e)
    };
    if let Err(e) = build() {
        let _ = std::fs::remove_file(&partial);
        return Err(fail(e.to_string()));
    }
    std::fs::rename(&partial, path).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        fail(e.to_string())
    })
}

#[cfg(test)]
#[path = "db_tests.rs"]
mod tests;
