//! The SQLite backend: one file, `relay.db` in the state directory.
//!
//! SQLite in WAL mode with `synchronous=FULL`: a token that `relay token
//! create` printed survives a power cut. Other processes (the `relay token
//! …` commands) write to the same file. Statements run off the async
//! workers (`spawn_blocking`); the relay keeps what the request path reads
//! in memory, so a request does not wait for that hop.
//!
//! The change feed: every write adds a row to `changes` in its own
//! transaction. A reader with a connection of its own checks `PRAGMA
//! data_version` (it moves when anyone else commits) and, when it moved,
//! reads the rows after the last it delivered: every [`POLL_INTERVAL`] on a
//! thread of its own (started by the first consumer), and whenever a cache
//! asks whether it is fresh ([`Changes::fresh`]).

mod audit;
mod grants;
mod migrations;
mod nodes;
mod oauth;
mod pins;
mod secrets;
mod sign_ins;
mod tokens;
mod users;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rusqlite::{params, Connection};
use tokio::sync::broadcast;

use crate::changes::{Change, ChangeFeed, ChangeHook, Changes};
use crate::StoreError;

pub use migrations::latest as latest_schema_version;

/// How often the poller looks for changes committed by anyone.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Changes a slow consumer may be behind before it gets a [`Change::Reset`].
const FEED_CAPACITY: usize = 1024;
/// Rows of `changes` older than this are deleted (every consumer polls far
/// more often).
const CHANGES_KEPT_SECS: i64 = 3600;

/// The SQLite store of a state directory.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    path: PathBuf,
    feed: broadcast::Sender<Change>,
    hooks: Mutex<Vec<ChangeHook>>,
    /// The change reader (`None` until the first consumer).
    reader: Mutex<Option<Reader>>,
}

/// Reads the changes others committed: its own connection, the
/// `data_version` it last saw and the last change it delivered.
struct Reader {
    conn: Option<Connection>,
    version: Option<i64>,
    last: i64,
}

thread_local! {
    /// The changes recorded by the statement closure running on this
    /// thread, for the hooks once it is done.
    static RECORDED: RefCell<Vec<Change>> = const { RefCell::new(Vec::new()) };
}

/// A failure inside a statement closure: SQLite's, or the store's own.
struct Fail(StoreError);

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Fail {
        Fail(sql_err(e))
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail(e)
    }
}

type Res<T> = Result<T, Fail>;

fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Adds `change` to the feed, in the transaction of the write.
fn changed(conn: &Connection, change: &Change) -> rusqlite::Result<()> {
    let (kind, key) = change.to_row();
    conn.prepare_cached("INSERT INTO changes (kind, key, at) VALUES (?1, ?2, ?3)")?
        .execute(params![kind, key, crate::now()])?;
    RECORDED.with(|r| r.borrow_mut().push(change.clone()));
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `state_dir`, and brings its
    /// schema up to date.
    pub fn open(state_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::File {
            what: "cannot create state dir",
            path: state_dir.to_path_buf(),
            source,
        })?;
        restrict_dir(state_dir);
        let path = state_dir.join("relay.db");
        let wrap = |e: rusqlite::Error| StoreError::Open {
            path: path.clone(),
            message: e.to_string(),
        };
        // Tokens' hashes, sessions, OAuth state: owner-only, whatever the umask.
        private_db(&path)?;
        let mut conn = Connection::open(&path).map_err(wrap)?;
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
        migrations::migrate(&mut conn, &path)?;
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path,
                feed,
                hooks: Mutex::new(Vec::new()),
                reader: Mutex::new(None),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The schema versions recorded as applied, oldest first.
    pub fn schema_versions(&self) -> Result<Vec<i64>, StoreError> {
        let conn = self.inner.lock();
        let mut stmt = conn
            .prepare("SELECT version FROM schema_migrations ORDER BY version")
            .map_err(sql_err)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(sql_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sql_err)
    }

    /// Runs `f` on the connection off the async workers (where there is a
    /// runtime; else here).
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Res<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        let job = move || inner.call(f);
        if tokio::runtime::Handle::try_current().is_err() {
            return job();
        }
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }

    /// Runs `f` on the connection where it is called (short reads outside
    /// the request path).
    fn inline<T>(&self, f: impl FnOnce(&mut Connection) -> Res<T>) -> Result<T, StoreError> {
        self.inner.call(f)
    }

    /// Starts reading the changes (the reader, and the poller thread),
    /// once: changes committed from now on are delivered.
    fn start_reading(&self) {
        let mut reader = self.inner.reader.lock().unwrap_or_else(|p| p.into_inner());
        if reader.is_some() {
            return;
        }
        let last: i64 = match self.inline(|c| {
            Ok(
                c.query_row("SELECT COALESCE(MAX(seq), 0) FROM changes", [], |r| {
                    r.get(0)
                })?,
            )
        }) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "change feed: cannot read the last change; not started");
                return;
            }
        };
        *reader = Some(Reader {
            conn: None,
            version: None,
            last,
        });
        drop(reader);
        let weak = Arc::downgrade(&self.inner);
        if let Err(e) = std::thread::Builder::new()
            .name("store-changes".into())
            .spawn(move || poll_changes(weak))
        {
            tracing::error!(error = %e, "change feed: cannot start the poller");
        }
    }
}

impl Inner {
    /// Runs `f` on the connection, then gives the hooks what it recorded
    /// (all of it even if it failed: forgetting more is safe).
    fn call<T>(&self, f: impl FnOnce(&mut Connection) -> Res<T>) -> Result<T, StoreError> {
        RECORDED.with(|r| r.borrow_mut().clear());
        let out = f(&mut self.lock()).map_err(|Fail(e)| e);
        let recorded = RECORDED.with(|r| std::mem::take(&mut *r.borrow_mut()));
        if !recorded.is_empty() {
            let hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for change in &recorded {
                for hook in &hooks {
                    hook(change);
                }
            }
        }
        out
    }

    /// Hands `change` to every feed and hook.
    fn deliver(&self, change: Change) {
        let hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for hook in &hooks {
            hook(&change);
        }
        let _ = self.feed.send(change);
    }

    /// Delivers every change committed (by anyone) since the last read. A
    /// `PRAGMA data_version` that has not moved costs no more. False if
    /// the changes cannot be read (they were delivered as a
    /// [`Change::Reset`]) or reading has not started.
    fn catch_up(&self) -> bool {
        let mut guard = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let Some(reader) = guard.as_mut() else {
            return false;
        };
        match read_changes(reader, &self.path, &mut |c| self.deliver(c)) {
            Ok(()) => true,
            Err(e) => {
                // Whatever was missed: every consumer forgets all it keeps.
                tracing::error!(error = %e, "change feed: reading changes failed");
                reader.conn = None;
                reader.version = None;
                self.deliver(Change::Reset);
                false
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (each call
        // is one statement or one transaction), so a poisoned lock is usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Changes for SqliteStore {
    fn changes(&self) -> ChangeFeed {
        // Subscribed first: nothing committed after this call is missed.
        let feed = ChangeFeed::new(self.inner.feed.subscribe());
        self.start_reading();
        feed
    }

    fn on_change(&self, hook: ChangeHook) {
        self.inner
            .hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(hook);
        self.start_reading();
    }

    fn fresh(&self) -> bool {
        self.inner.catch_up()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }
}

/// The poller: until the store is dropped, every [`POLL_INTERVAL`], the
/// changes committed since the last read are delivered.
fn poll_changes(store: Weak<Inner>) {
    for tick in 0u64.. {
        std::thread::sleep(POLL_INTERVAL);
        let Some(inner) = store.upgrade() else {
            return;
        };
        inner.catch_up();
        // Now and then (on the store's connection, as any write), forget
        // changes every reader has long read.
        if tick % 3000 == 0 {
            let pruned = inner.lock().execute(
                "DELETE FROM changes WHERE at < ?1",
                [crate::now() - CHANGES_KEPT_SECS],
            );
            if let Err(e) = pruned {
                tracing::warn!(error = %e, "change feed: cannot prune old changes");
            }
        }
    }
}

fn read_changes(
    reader: &mut Reader,
    path: &Path,
    deliver: &mut dyn FnMut(Change),
) -> rusqlite::Result<()> {
    if reader.conn.is_none() {
        let c = Connection::open(path)?;
        c.busy_timeout(Duration::from_secs(5))?;
        reader.conn = Some(c);
    }
    let Some(conn) = reader.conn.as_ref() else {
        return Ok(());
    };
    let v: i64 = conn
        .prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))?;
    if reader.version == Some(v) {
        return Ok(());
    }
    let mut stmt =
        conn.prepare_cached("SELECT seq, kind, key FROM changes WHERE seq > ?1 ORDER BY seq")?;
    let rows = stmt
        .query_map([reader.last], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?))
        })?
        .collect::<Result<Vec<(i64, String, String)>, _>>()?;
    drop(stmt);
    if let Some((first, _, _)) = rows.first() {
        if *first > reader.last + 1 {
            // Rows after the last seen were pruned: they are unknown.
            deliver(Change::Reset);
        }
    }
    for (seq, kind, key) in rows {
        reader.last = seq;
        deliver(Change::from_row(&kind, key));
    }
    reader.version = Some(v);
    Ok(())
}

/// Creates `path` with mode 0600, or sets an existing one's to 0600.
fn private_db(path: &Path) -> Result<(), StoreError> {
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
    opts.open(path).map_err(|source| StoreError::File {
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
fn chmod_private(path: &Path, must_exist: bool) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        Ok(()) => Ok(()),
        Err(e) if !must_exist && e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::File {
            what: "cannot make private (chmod 600)",
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(not(unix))]
fn chmod_private(_path: &Path, _must_exist: bool) -> Result<(), StoreError> {
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
    fn the_database_files_are_private_and_a_failed_chmod_is_an_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("dbr-store-{}", crate::token::random_hex(6)));
        let store = SqliteStore::open(&dir).expect("open");
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
}
