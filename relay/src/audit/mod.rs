//! The audit trail: one JSON line per message in `<state-dir>/audit.jsonl`.
//!
//! Durability rule: an event is written to the file (one `write(2)` on an
//! append-only descriptor, no user-space buffer) by the request's own task,
//! before the end of its response is handed to the client. So a crash or
//! SIGKILL of the relay process never loses the event of a request whose
//! client saw it complete. A background thread `fdatasync`s the file at most
//! 100 ms after a write (group commit), so a crash of the machine (power,
//! kernel) can lose at most the last 100 ms of events.
//!
//! Every line is sealed into a hash chain ([`crate::audit::chain`]; `relay
//! audit verify` checks it), and `audit.jsonl` is rotated at a size, the
//! chain going on in the next file. Writers take `audit.lock` (the relay and
//! `relay tools approve` may both append); a torn last line left by a crash
//! is chained past by the next line.
//!
//! The audit never drops silently. If an event cannot be written,
//! [`Audit::healthy`] turns false and the gateway refuses requests (fail
//! closed) until a write succeeds again. Tokens never appear in events, and
//! tool arguments only as a hash unless the operator asks for them.

pub mod chain;
pub mod ship;
pub mod verify;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::RelayError;
use chain::{self as audit_chain, seal, Head, Tail};

/// Longest time between an event's write and its `fdatasync`.
const SYNC_EVERY: Duration = Duration::from_millis(100);

/// One audited message (or one HTTP exchange that carried no JSON-RPC).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuditEvent {
    /// RFC 3339 time the request arrived.
    pub time: String,
    pub request_id: String,
    /// Who asked (the token's owner).
    pub identity: String,
    /// The identity provider's groups of `identity` (sign-in through an
    /// upstream provider); absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The credential used: a client token's name, or the OAuth client id.
    pub client: String,
    pub route: String,
    /// HTTP method and path below the route.
    pub http: String,
    /// JSON-RPC method, when the body was a JSON-RPC message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// request / notification / response / error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Tool name, prompt name or resource URI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// SHA-256 of the arguments' JSON (or the arguments themselves with
    /// `--audit-arguments`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Value>,
    /// `allow` or `deny`.
    pub decision: String,
    /// What decided (rule or policy ids).
    pub policy: Vec<String>,
    /// What the SQL argument does, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlSummary>,
    /// HTTP status returned to the client.
    pub status: u16,
    /// From request arrival to the end of the response body.
    pub latency_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// False when the response was cut short (client gone, agent failed).
    pub complete: bool,
    /// The route owner's word on a request that waited for it on the laptop
    /// (`agent connect --approve`): `approved|denied|timeout; by=WHO;
    /// at=RFC3339`, as the agent reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// A tool pin event (`kind` `tool-pin`): the pinned and the new
    /// definition's hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<PinHashes>,
    /// The hash chain (see [`crate::audit::chain`]): the line's number, the
    /// previous line's hash and its own. Set when read back, never when
    /// recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// The hashes of a tool pin event (hex SHA-256 of the canonical definition).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PinHashes {
    /// The definition pinned before (absent when first pinned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_hash: Option<String>,
    pub new_hash: String,
}

/// The SQL facts worth keeping in the trail.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SqlSummary {
    pub parsed: bool,
    pub read_only: bool,
    pub kinds: Vec<String>,
    pub tables: Vec<String>,
}

impl From<&policy::sql::SqlFacts> for SqlSummary {
    fn from(f: &policy::sql::SqlFacts) -> Self {
        SqlSummary {
            parsed: f.parsed,
            read_only: f.read_only,
            kinds: f.kind_names().into_iter().map(str::to_owned).collect(),
            tables: f.tables.clone(),
        }
    }
}

/// The time now, RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The audit log, shared by every request.
pub struct Audit {
    writer: Mutex<Writer>,
    sync: Arc<SyncState>,
    healthy: AtomicBool,
    path: PathBuf,
    /// Keep arguments in the clear instead of hashing them.
    pub keep_arguments: bool,
}

/// The appending end of the log (one at a time, under the mutex).
struct Writer {
    dir: PathBuf,
    /// `audit.jsonl`, open for appending.
    file: Arc<File>,
    /// `audit.lock`: held (`flock`) while appending or rotating, as other
    /// processes writing the log (`relay tools approve`) hold it.
    lock: Arc<File>,
    /// Where the chain stands after the last line this process wrote, and
    /// the file's length then (another length: someone else appended or the
    /// last write was torn, so the tail is read again).
    tail: Option<(Tail, u64)>,
    /// Rotate `audit.jsonl` when a line would take it past this (0: never).
    rotate_size: u64,
}

/// What the group-commit thread shares with the writers.
struct SyncState {
    /// The file to sync (replaced when the log is rotated).
    file: Mutex<Arc<File>>,
    /// The chain's last link written; on disk once synced (`audit.head`).
    head: Mutex<Option<Head>>,
    /// Written since the last `fdatasync`.
    dirty: AtomicBool,
    /// The `Audit` is gone: sync once more and end.
    closed: AtomicBool,
    /// A failed `fdatasync` (the writers then report unhealthy).
    failed: AtomicBool,
}

impl Audit {
    /// Opens (appending) `<state_dir>/audit.jsonl` and starts the syncer.
    /// `rotate_size`: rotate the file when a line would take it past this
    /// many bytes (0: never).
    pub fn open(
        state_dir: &Path,
        keep_arguments: bool,
        rotate_size: u64,
    ) -> Result<Audit, RelayError> {
        let path = state_dir.join(audit_chain::LOG);
        let file_err = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| RelayError::File { what, path, source }
        };
        let file = open_append(&path).map_err(file_err("cannot open the audit log", &path))?;
        let lock_path = state_dir.join(audit_chain::LOCK);
        let lock = open_append(&lock_path).map_err(file_err("cannot open", &lock_path))?;
        let head_path = state_dir.join(audit_chain::HEAD);
        let head_file = open_rw(&head_path).map_err(file_err("cannot open", &head_path))?;
        let file = Arc::new(file);
        let sync = Arc::new(SyncState {
            file: Mutex::new(file.clone()),
            head: Mutex::new(None),
            dirty: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        });
        let s = sync.clone();
        let p = path.clone();
        std::thread::Builder::new()
            .name("audit-sync".into())
            .spawn(move || sync_loop(s, head_file, p))
            .map_err(file_err("cannot start the audit syncer for", &path))?;
        Ok(Audit {
            writer: Mutex::new(Writer {
                dir: state_dir.to_path_buf(),
                file,
                lock: Arc::new(lock),
                tail: None,
                rotate_size,
            }),
            sync,
            healthy: AtomicBool::new(true),
            path,
            keep_arguments,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether events are being written. While false, requests must be refused.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire) && !self.sync.failed.load(Ordering::Acquire)
    }

    /// Writes an event now (see the durability rule above), sealed as the
    /// chain's next link. A failed write marks the audit unhealthy, so the
    /// next requests are refused, and is reported in the log; the next
    /// successful write makes it healthy again.
    pub fn record(&self, event: AuditEvent) {
        // One allocation for a usual event (serde_json starts at 128 bytes).
        let mut object = Vec::with_capacity(1024);
        match serde_json::to_writer(&mut object, &unsealed(event)) {
            Ok(()) => {}
            Err(e) => {
                self.healthy.store(false, Ordering::Release);
                tracing::error!(error = %e, "cannot encode an audit event: refusing requests");
                return;
            }
        }
        let written = {
            let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            writer.append(&object, &self.sync)
        };
        match written {
            Ok(()) => {
                self.sync.dirty.store(true, Ordering::Release);
                if !self.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!(path = %self.path.display(), "audit log writable again");
                }
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Release);
                tracing::error!(path = %self.path.display(), error = %e, "cannot write the audit log: refusing requests");
            }
        }
    }

    /// What to store for a message's arguments.
    pub fn arguments(&self, args: &serde_json::Value) -> serde_json::Value {
        if self.keep_arguments {
            return args.clone();
        }
        let canonical = serde_json::to_vec(args).unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, &canonical);
        serde_json::Value::String(format!(
            "sha256:{}",
            audit_chain::lower_hex(digest.as_ref())
        ))
    }
}

impl Writer {
    /// Appends one sealed line, under `audit.lock`, rotating first when due.
    fn append(&mut self, object: &[u8], sync: &SyncState) -> std::io::Result<()> {
        let _locked = Flock::exclusive(self.lock.clone())?;
        let len = self.file.metadata()?.len();
        let mut tail = match self.tail.take() {
            Some((tail, at)) if at == len => tail,
            // First write, another writer appended, or a torn write.
            _ => current_tail(&self.file, &self.dir)?,
        };
        let mut len = len;
        if self.rotate_size > 0 && len > 0 && len + object.len() as u64 + 200 > self.rotate_size {
            match self.rotate(&tail.head, sync) {
                Ok(()) => {
                    // A torn last line stays in the rotated file; the new
                    // file's first line chains past it.
                    tail.torn = false;
                    len = 0;
                }
                // Not a reason to refuse requests: the chain goes on in the
                // file open now, and the next line tries again.
                Err(e) => tracing::error!(error = %e, "cannot rotate the audit log"),
            }
        }
        let (mut line, head) = seal(object, &tail.head);
        if tail.torn {
            line.insert(0, b'\n');
        }
        (&*self.file).write_all(&line)?;
        self.tail = Some((
            Tail {
                head: head.clone(),
                torn: false,
            },
            len + line.len() as u64,
        ));
        *sync.head.lock().unwrap_or_else(|p| p.into_inner()) = Some(head);
        Ok(())
    }

    /// Renames `audit.jsonl` to `audit-<seq of its last line>.jsonl` and
    /// starts a new one (under the lock; the chain goes on).
    fn rotate(&mut self, head: &Head, sync: &SyncState) -> std::io::Result<()> {
        self.file.sync_data()?;
        let live = self.dir.join(audit_chain::LOG);
        let archive = self.dir.join(audit_chain::archive_name(head.seq));
        if archive.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("cannot rotate the audit log: {} exists", archive.display()),
            ));
        }
        std::fs::rename(&live, &archive)?;
        let file = Arc::new(open_append(&live)?);
        File::open(&self.dir)?.sync_all()?;
        *sync.file.lock().unwrap_or_else(|p| p.into_inner()) = file.clone();
        self.file = file;
        tracing::info!(archive = %archive.display(), seq = head.seq, "audit log rotated");
        Ok(())
    }
}

/// The chain's tail at the end of the live log `file` (continuing the last
/// rotated file, or from genesis, when it is empty).
fn current_tail(file: &File, dir: &Path) -> std::io::Result<Tail> {
    match audit_chain::tail(file)? {
        Some(t) => Ok(t),
        None => Ok(Tail {
            head: audit_chain::head_before_live(dir)?,
            torn: false,
        }),
    }
}

/// `event` without chain members (they are added by [`seal`]).
fn unsealed(mut event: AuditEvent) -> AuditEvent {
    event.seq = None;
    event.prev = None;
    event.hash = None;
    event
}

/// An exclusive `flock` on a file, released when dropped.
struct Flock(Arc<File>);

impl Flock {
    fn exclusive(file: Arc<File>) -> std::io::Result<Flock> {
        file.lock()?;
        Ok(Flock(file))
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Opens for appending (and reading: the chain's tail).
fn open_append(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).read(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

fn open_rw(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).read(true).write(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

impl Drop for Audit {
    fn drop(&mut self) {
        self.sync.closed.store(true, Ordering::Release);
    }
}

/// Group commit: `fdatasync` at most [`SYNC_EVERY`] after a write, then
/// record the chain's head as on disk (`audit.head`).
fn sync_loop(sync: Arc<SyncState>, head_file: File, path: PathBuf) {
    loop {
        std::thread::sleep(SYNC_EVERY);
        let closed = sync.closed.load(Ordering::Acquire);
        if sync.dirty.swap(false, Ordering::AcqRel) {
            // Every line up to `head` was written before it was set.
            let head = sync.head.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let file = sync.file.lock().unwrap_or_else(|p| p.into_inner()).clone();
            match file.sync_data() {
                Ok(()) => {
                    if sync.failed.swap(false, Ordering::AcqRel) {
                        tracing::info!(path = %path.display(), "audit log syncs again");
                    }
                    if let Some(head) = head {
                        if let Err(e) = audit_chain::write_head(&head_file, &head) {
                            tracing::warn!(error = %e, "cannot write audit.head");
                        }
                    }
                }
                Err(e) => {
                    // Written but maybe not on disk: keep trying, refuse meanwhile.
                    sync.dirty.store(true, Ordering::Release);
                    if !sync.failed.swap(true, Ordering::AcqRel) {
                        tracing::error!(path = %path.display(), error = %e, "cannot sync the audit log: refusing requests");
                    }
                }
            }
        }
        if closed {
            return;
        }
    }
}

/// Appends events to the audit log of `state_dir` and syncs it, from a
/// process that does not run the relay (the `relay tools approve` command):
/// under `audit.lock`, chained after the last line whoever wrote it.
pub fn append(state_dir: &Path, events: &[AuditEvent]) -> Result<(), RelayError> {
    let path = state_dir.join(audit_chain::LOG);
    let wrap = |source| RelayError::File {
        what: "cannot write the audit log",
        path: path.clone(),
        source,
    };
    let lock = open_append(&state_dir.join(audit_chain::LOCK)).map_err(wrap)?;
    let _locked = Flock::exclusive(Arc::new(lock)).map_err(wrap)?;
    // Opened under the lock: the relay may have rotated it.
    let file = open_append(&path).map_err(wrap)?;
    let tail = current_tail(&file, state_dir).map_err(wrap)?;
    let mut head = tail.head;
    let mut lines = Vec::new();
    if tail.torn {
        lines.push(b'\n');
    }
    for event in events {
        let object = serde_json::to_vec(&unsealed(event.clone())).map_err(|e| wrap(e.into()))?;
        let (line, next) = seal(&object, &head);
        lines.extend_from_slice(&line);
        head = next;
    }
    // One write of whole lines.
    (&file).write_all(&lines).map_err(wrap)?;
    file.sync_data().map_err(wrap)?;
    let head_file = open_rw(&state_dir.join(audit_chain::HEAD)).map_err(wrap)?;
    audit_chain::write_head(&head_file, &head).map_err(wrap)
}

/// A filter for `relay audit`.
#[derive(Debug, Default)]
pub struct Query {
    pub route: Option<String>,
    /// Only events at or after this RFC 3339 time.
    pub since: Option<SystemTime>,
    pub decision: Option<String>,
}

/// Reads the events of every audit file of `state_dir` (the rotated ones,
/// then `audit.jsonl`) that match `query`, oldest first, and how many lines
/// were not events.
pub fn read_all(state_dir: &Path, query: &Query) -> Result<(Vec<AuditEvent>, usize), RelayError> {
    let files = audit_chain::files(state_dir).map_err(|source| RelayError::File {
        what: "cannot list the audit logs in",
        path: state_dir.to_path_buf(),
        source,
    })?;
    let mut events = Vec::new();
    let mut bad = 0;
    for path in files {
        let (mut more, b) = read(&path, query)?;
        events.append(&mut more);
        bad += b;
    }
    Ok((events, bad))
}

/// Reads the events of `path` that match `query`, oldest first. Lines that are
/// not events (a torn last line after a crash) are reported, not hidden.
pub fn read(path: &Path, query: &Query) -> Result<(Vec<AuditEvent>, usize), RelayError> {
    let file = File::open(path).map_err(|source| RelayError::File {
        what: "cannot read the audit log",
        path: path.to_path_buf(),
        source,
    })?;
    let mut events = Vec::new();
    let mut bad = 0;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|source| RelayError::File {
            what: "cannot read the audit log",
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(event) = serde_json::from_str::<AuditEvent>(&line) else {
            bad += 1;
            continue;
        };
        if query.route.as_deref().is_some_and(|r| r != event.route) {
            continue;
        }
        if query
            .decision
            .as_deref()
            .is_some_and(|d| d != event.decision)
        {
            continue;
        }
        if let Some(since) = query.since {
            match humantime::parse_rfc3339_weak(&event.time) {
                Ok(t) if t >= since => {}
                _ => continue,
            }
        }
        events.push(event);
    }
    Ok((events, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_written_in_order_and_queried() {
        let dir =
            std::env::temp_dir().join(format!("dbr-audit-{}", crate::store::token::random_hex(6)));
        std::fs::create_dir_all(&dir).expect("dir");
        let audit = Audit::open(&dir, false, 0).expect("open");
        for (i, decision) in ["allow", "deny", "allow"].iter().enumerate() {
            audit.record(AuditEvent {
                time: now_rfc3339(),
                request_id: format!("r{i}"),
                route: if i == 2 { "other".into() } else { "db".into() },
                decision: (*decision).into(),
                ..Default::default()
            });
        }
        let path = audit.path().to_path_buf();
        drop(audit);
        // The writer drains and syncs on shutdown; give it a moment.
        let mut events = Vec::new();
        for _ in 0..100 {
            events = read(&path, &Query::default()).expect("read").0;
            if events.len() == 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            events
                .iter()
                .map(|e| e.request_id.as_str())
                .collect::<Vec<_>>(),
            ["r0", "r1", "r2"]
        );
        let q = Query {
            route: Some("db".into()),
            decision: Some("deny".into()),
            ..Default::default()
        };
        let (only, bad) = read(&path, &q).expect("read");
        assert_eq!((only.len(), bad), (1, 0));
        assert_eq!(only[0].request_id, "r1");
        // A torn line is counted, not hidden.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open")
            .write_all(b"{\"time\":")
            .expect("write");
        assert_eq!(read(&path, &Query::default()).expect("read").1, 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn arguments_are_hashed_unless_kept() {
        let dir =
            std::env::temp_dir().join(format!("dbr-audit-{}", crate::store::token::random_hex(6)));
        std::fs::create_dir_all(&dir).expect("dir");
        let args = serde_json::json!({"query": "SELECT secret FROM t"});
        let hashed = Audit::open(&dir, false, 0).expect("open").arguments(&args);
        assert!(hashed
            .as_str()
            .is_some_and(|s| s.starts_with("sha256:") && !s.contains("secret")));
        let kept = Audit::open(&dir, true, 0).expect("open").arguments(&args);
        assert_eq!(kept, args);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_chain_holds_across_other_writers_torn_lines_and_rotation() {
        let dir =
            std::env::temp_dir().join(format!("dbr-audit-{}", crate::store::token::random_hex(6)));
        std::fs::create_dir_all(&dir).expect("dir");
        let event = |id: &str| AuditEvent {
            time: now_rfc3339(),
            request_id: id.into(),
            ..Default::default()
        };
        let audit = Audit::open(&dir, false, 1500).expect("open");
        audit.record(event("relay-1"));
        // Another process appends (`relay tools approve`) ...
        append(&dir, &[event("cli-1"), event("cli-2")]).expect("append");
        // ... and a crash left a torn line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(audit_chain::LOG))
            .expect("open")
            .write_all(b"{\"time\":")
            .expect("write");
        for i in 0..10 {
            audit.record(event(&format!("relay-{}", i + 2)));
        }
        assert!(audit.healthy());
        drop(audit);
        let files = audit_chain::files(&dir).expect("files");
        assert!(files.len() > 2, "rotated: {files:?}");
        let report = crate::audit::verify::verify_files(&dir, &[]).expect("intact");
        assert_eq!(report.last.as_ref().map(|h| h.seq), Some(13), "{report}");
        assert_eq!(report.notes.len(), 1, "the torn line: {report}");
        let (events, bad) = read_all(&dir, &Query::default()).expect("read");
        assert_eq!((events.len(), bad), (13, 1));
        assert_eq!(events[1].request_id, "cli-1");
        assert_eq!(events[12].seq, Some(13));
        let _ = std::fs::remove_dir_all(dir);
    }
}
