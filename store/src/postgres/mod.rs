//! The PostgreSQL backend: any number of relay processes (nodes) on one
//! database.
//!
//! A pool of connections (`deadpool-postgres`) for statements; TLS through
//! rustls with ring unless the URL says `sslmode=disable`. Every flow that
//! reads then writes (revocation, rotation, code redemption, refresh,
//! device polls, route claims) is one transaction that locks what it reads
//! (`SELECT … FOR UPDATE`, `UPDATE … RETURNING`, `DELETE … RETURNING`, or an
//! advisory lock), so concurrent attempts on any nodes have one winner.
//!
//! The change feed: every write adds rows to `changes` in its own
//! transaction, just before committing, under a transaction advisory lock
//! (so that `seq` follows commit order: a reader that saw row N has seen
//! every row before it), and sends a payload-less `NOTIFY
//! drawbridge_changes`. One dedicated listener connection per store
//! (started by the first consumer) `LISTEN`s, and on each notification,
//! and every [`CATCH_UP_INTERVAL`] whatever comes, reads the rows after the
//! last it delivered. A read that started at `t` proves that every write
//! committed before `t` has been delivered: [`Changes::fresh`] is true
//! while that proof is at most [`FRESHNESS_BOUND`] old. When the listener
//! loses its connection it reconnects with back-off, and delivers a
//! [`Change::Reset`].

mod audit;
mod grants;
mod migrations;
mod nodes;
mod oauth;
mod pins;
mod secrets;
mod sign_ins;
mod tls;
mod tokens;
mod users;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::FromSql;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use crate::changes::{Change, ChangeFeed, ChangeHook, Changes};
use crate::StoreError;

pub use migrations::latest as latest_schema_version;
pub use tls::MakeRustlsConnect;

/// The channel of the change feed's notifications.
const CHANNEL: &str = "drawbridge_changes";
/// The transaction advisory lock under which changes are recorded (an
/// arbitrary constant: "DBRCHNGS").
const CHANGES_LOCK: i64 = 0x4442_5243_484e_4753;
/// How often the listener reads the changes even without a notification
/// (its proof of freshness, and its check that the connection lives).
pub const CATCH_UP_INTERVAL: Duration = Duration::from_millis(200);
/// How old the listener's latest complete read may be for
/// [`Changes::fresh`] to say true. With the relay's bound on a read of the
/// request path (0.4 s), a node cut off from the database refuses within
/// 0.9 s of the cut: its caches stop answering at most this long after its
/// last read, and the read that replaces them gives up 0.4 s later.
pub const FRESHNESS_BOUND: Duration = Duration::from_millis(500);
/// A read of the changes that takes longer means the connection is dead.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Connecting, and unacknowledged data on a connection, may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The `application_name` of the listener's connection.
pub const LISTENER_APPLICATION_NAME: &str = "drawbridge-changes";
/// Connections of the pool.
const POOL_SIZE: usize = 16;
/// Changes a slow consumer may be behind before it gets a [`Change::Reset`].
const FEED_CAPACITY: usize = 1024;
/// Rows of `changes` older than this are deleted (every listener reads them
/// far more often).
const CHANGES_KEPT_SECS: i64 = 3600;

/// The PostgreSQL store of a cluster of relays.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    config: tokio_postgres::Config,
    tls: Tls,
    /// The URL without its password, for messages.
    shown: String,
    feed: broadcast::Sender<Change>,
    hooks: Mutex<Vec<ChangeHook>>,
    /// The last change this store's feed delivered (a read starts after it).
    last: AtomicU64,
    /// Whether the listener was started.
    listening: AtomicBool,
    /// When the listener's latest complete read started, in milliseconds
    /// after `base` plus one; 0: none since it (re)connected.
    proven: AtomicU64,
    /// Told after each proof (and when the listener's connection is lost).
    proofs: tokio::sync::Notify,
    base: Instant,
}

/// How to connect: plain (`sslmode=disable`) or TLS through rustls.
#[derive(Clone)]
enum Tls {
    None,
    Rustls(MakeRustlsConnect),
}

/// A database error as a store error (unique violations are conflicts).
pub(crate) fn pg(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        // "Key (user_code)=(BCDFGHJK) already exists."
        Some(db) if db.code() == &SqlState::UNIQUE_VIOLATION => StoreError::Conflict(
            db.detail()
                .map(|d| d.trim_end_matches(" already exists."))
                .or(db.constraint())
                .unwrap_or(db.message())
                .to_owned(),
        ),
        Some(db) => StoreError::Backend(format!("{} ({})", db.message(), db.code().code())),
        None => StoreError::Backend(e.to_string()),
    }
}

/// Column `i` of `row`, or an error that says which.
pub(crate) fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}

/// A transaction of the pool, and the changes it makes.
pub(crate) struct Write<'a> {
    pub tx: deadpool_postgres::Transaction<'a>,
    pub changes: Vec<Change>,
}

impl Write<'_> {
    pub fn changed(&mut self, change: Change) {
        self.changes.push(change);
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db?sslmode=…`)
    /// and brings its schema up to date (under an advisory lock: nodes
    /// starting together apply each migration once).
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Open {
            path: PathBuf::from("postgres://…"),
            message: format!("not a PostgreSQL URL: {e}"),
        })?;
        // A database that stops answering without closing the connection
        // fails statements within seconds instead of hanging them (the URL
        // may say otherwise).
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(CONNECT_TIMEOUT);
        }
        config.keepalives_idle(CONNECT_TIMEOUT);
        if config.get_application_name().is_none() {
            config.application_name("drawbridge");
        }
        let shown = shown(&config);
        let open_err = |message: String| StoreError::Open {
            path: PathBuf::from(&shown),
            message,
        };
        let tls = if config.get_ssl_mode() == SslMode::Disable {
            Tls::None
        } else {
            Tls::Rustls(MakeRustlsConnect::with_web_roots().map_err(|e| open_err(e.to_string()))?)
        };
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Tls::None => Manager::from_config(config.clone(), NoTls, manager_config),
            Tls::Rustls(t) => Manager::from_config(config.clone(), t.clone(), manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .wait_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| open_err(e.to_string()))?;
        {
            let mut conn = pool
                .get()
                .await
                .map_err(|e| open_err(format!("cannot connect: {}", causes(&e))))?;
            migrations::migrate(&mut conn, &shown).await?;
        }
        let store = PostgresStore {
            inner: Arc::new(Inner {
                pool,
                config,
                tls,
                shown,
                feed: broadcast::channel(FEED_CAPACITY).0,
                hooks: Mutex::new(Vec::new()),
                last: AtomicU64::new(0),
                listening: AtomicBool::new(false),
                proven: AtomicU64::new(0),
                proofs: tokio::sync::Notify::new(),
                base: Instant::now(),
            }),
        };
        // The feed starts after what is committed now.
        let conn = store.conn().await?;
        let last: i64 = col(
            &conn
                .query_one("SELECT COALESCE(MAX(seq), 0) FROM changes", &[])
                .await
                .map_err(pg)?,
            0,
        )?;
        store.inner.last.store(last.max(0) as u64, Ordering::SeqCst);
        Ok(store)
    }

    /// The database, without its password.
    pub fn shown(&self) -> &str {
        &self.inner.shown
    }

    /// The schema versions recorded as applied, oldest first.
    pub async fn schema_versions(&self) -> Result<Vec<i64>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(|r| col(r, 0)).collect()
    }

    /// A connection of the pool.
    pub(crate) async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Backend(format!("{}: {e}", self.inner.shown)))
    }

    /// Begins a write on `conn`.
    pub(crate) async fn begin<'a>(
        &self,
        conn: &'a mut deadpool_postgres::Object,
    ) -> Result<Write<'a>, StoreError> {
        Ok(Write {
            tx: conn.transaction().await.map_err(pg)?,
            changes: Vec::new(),
        })
    }

    /// Commits `w`: first its changes (under the changes lock, with a
    /// NOTIFY), then hands them to the hooks.
    pub(crate) async fn commit(&self, w: Write<'_>) -> Result<(), StoreError> {
        let Write { tx, changes } = w;
        if !changes.is_empty() {
            tx.execute(
                "SELECT pg_advisory_xact_lock($1), pg_notify($2, '')",
                &[&CHANGES_LOCK, &CHANNEL],
            )
            .await
            .map_err(pg)?;
            let (kinds, keys): (Vec<&str>, Vec<&str>) = changes.iter().map(Change::to_row).unzip();
            tx.execute(
                "INSERT INTO changes (kind, key, at)
                 SELECT k, v, $3 FROM unnest($1::text[], $2::text[]) AS u(k, v)",
                &[&kinds, &keys, &crate::now()],
            )
            .await
            .map_err(pg)?;
        }
        let committed = tx.commit().await.map_err(pg);
        // Even if the commit failed: forgetting more is safe.
        self.inner.call_hooks(&changes);
        committed
    }

    /// Starts the listener, once, on a thread of its own: its reads are the
    /// proof of freshness every request waits on, so they must not queue
    /// behind the requests themselves on a busy runtime (a node whose
    /// workers are saturated would otherwise find its own caches stale and
    /// answer 503).
    fn start_listening(&self) {
        if self.inner.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let store = Arc::downgrade(&self.inner);
        let started = std::thread::Builder::new()
            .name("pg-changes".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(listen(store)),
                    Err(e) => {
                        tracing::error!(error = %e, "change feed: cannot start the listener's runtime")
                    }
                }
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "change feed: cannot start the listener's thread");
            self.inner.listening.store(false, Ordering::SeqCst);
        }
    }
}

impl Inner {
    fn call_hooks(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for change in changes {
            for hook in &hooks {
                hook(change);
            }
        }
    }

    /// Hands `change` to every hook and feed.
    fn deliver(&self, change: Change) {
        self.call_hooks(std::slice::from_ref(&change));
        let _ = self.feed.send(change);
    }

    fn millis(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }
}

/// `e` and its sources, "a: b: c" (the pool's error alone says only
/// "error connecting to server", not why).
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// The URL of `config` without its password.
fn shown(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

#[async_trait::async_trait]
impl Changes for PostgresStore {
    fn changes(&self) -> ChangeFeed {
        // Subscribed first: nothing committed after this call is missed.
        let feed = ChangeFeed::new(self.inner.feed.subscribe());
        self.start_listening();
        feed
    }

    fn on_change(&self, hook: ChangeHook) {
        self.inner
            .hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(hook);
        self.start_listening();
    }

    fn fresh(&self) -> bool {
        let proven = self.inner.proven.load(Ordering::SeqCst);
        proven != 0
            && self.inner.millis().saturating_sub(proven) <= FRESHNESS_BOUND.as_millis() as u64
    }

    async fn fresh_within(&self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let told = self.inner.proofs.notified();
            tokio::pin!(told);
            told.as_mut().enable();
            if self.fresh() {
                return true;
            }
            // Not connected (or not yet read since it connected): nothing
            // to wait for.
            if self.inner.proven.load(Ordering::SeqCst) == 0 {
                return false;
            }
            if tokio::time::timeout_at(deadline, told).await.is_err() {
                return self.fresh();
            }
        }
    }

    fn freshness_bound(&self) -> Duration {
        FRESHNESS_BOUND
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.simple_query("SELECT 1").await.map_err(pg)?;
        Ok(())
    }
}

/// The listener: until the store is dropped, connects, `LISTEN`s, and reads
/// the changes on every notification and every [`CATCH_UP_INTERVAL`];
/// reconnects with back-off when the connection fails.
async fn listen(store: Weak<Inner>) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        let Some(inner) = store.upgrade() else {
            return;
        };
        let (mut config, tls, shown) =
            (inner.config.clone(), inner.tls.clone(), inner.shown.clone());
        config.application_name(LISTENER_APPLICATION_NAME);
        drop(inner);
        let (tx, rx) = mpsc::unbounded_channel();
        let connected = match tls {
            Tls::None => connect_listener(&config, NoTls, tx).await,
            Tls::Rustls(t) => connect_listener(&config, t, tx).await,
        };
        match connected {
            Ok(client) => {
                if !first {
                    // Whatever was missed while disconnected.
                    if let Some(inner) = store.upgrade() {
                        inner.deliver(Change::Reset);
                    }
                }
                first = false;
                backoff = Duration::from_millis(100);
                let why = follow(&store, &client, rx).await;
                if let Some(inner) = store.upgrade() {
                    inner.proven.store(0, Ordering::SeqCst);
                    inner.proofs.notify_waiters();
                    inner.deliver(Change::Reset);
                } else {
                    return;
                }
                tracing::warn!(database = %shown, error = %why, "change feed: listener connection lost; reconnecting");
            }
            Err(e) => {
                tracing::warn!(database = %shown, error = %e, "change feed: cannot connect the listener; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Connects the listener's connection and `LISTEN`s; notifications go to
/// `tx`, which closes when the connection ends.
async fn connect_listener<T>(
    config: &tokio_postgres::Config,
    tls: T,
    tx: mpsc::UnboundedSender<()>,
) -> Result<tokio_postgres::Client, StoreError>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = tokio::time::timeout(READ_TIMEOUT * 2, config.connect(tls))
        .await
        .map_err(|_| StoreError::Backend("connecting timed out".into()))?
        .map_err(pg)?;
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "change feed: listener connection failed");
                    return;
                }
                None => return,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(pg)?;
    Ok(client)
}

/// Reads the changes on every notification and every
/// [`CATCH_UP_INTERVAL`] until the connection fails (why) or the store is
/// dropped.
async fn follow(
    store: &Weak<Inner>,
    client: &tokio_postgres::Client,
    mut rx: mpsc::UnboundedReceiver<()>,
) -> StoreError {
    let mut tick = tokio::time::interval(CATCH_UP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reads = 0u64;
    loop {
        tokio::select! {
            n = rx.recv() => {
                if n.is_none() {
                    return StoreError::Backend("the listener connection closed".into());
                }
                // One read for every notification already here.
                while rx.try_recv().is_ok() {}
            }
            _ = tick.tick() => {}
        }
        let Some(inner) = store.upgrade() else {
            return StoreError::Backend("the store is gone".into());
        };
        let started = inner.millis();
        let after = inner.last.load(Ordering::SeqCst) as i64;
        let read = tokio::time::timeout(
            READ_TIMEOUT,
            client.query(
                "SELECT seq, kind, key FROM changes WHERE seq > $1 ORDER BY seq",
                &[&after],
            ),
        )
        .await;
        let rows = match read {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return pg(e),
            Err(_) => return StoreError::Backend("reading the changes timed out".into()),
        };
        for row in &rows {
            let (seq, kind, key) = match (col::<i64>(row, 0), col::<String>(row, 1), col(row, 2)) {
                (Ok(s), Ok(k), Ok(v)) => (s, k, v),
                _ => (after, String::new(), String::new()),
            };
            inner.last.store(seq.max(after) as u64, Ordering::SeqCst);
            inner.deliver(Change::from_row(&kind, key));
        }
        inner.proven.store(started, Ordering::SeqCst);
        inner.proofs.notify_waiters();
        // Now and then, forget changes every listener has long read.
        reads += 1;
        if reads % 2400 == 1 {
            if let Err(e) = client
                .execute(
                    "DELETE FROM changes WHERE at < $1",
                    &[&(crate::now() - CHANGES_KEPT_SECS)],
                )
                .await
            {
                tracing::warn!(error = %e, "change feed: cannot prune old changes");
            }
        }
    }
}
