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
//! The audit never drops silently. If an event cannot be written,
//! [`Audit::healthy`] turns false and the gateway refuses requests (fail
//! closed) until a write succeeds again. Tokens never appear in events, and
//! tool arguments only as a hash unless the operator asks for them.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::RelayError;

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
    /// A tool pin event (`kind` `tool-pin`): the pinned and the new
    /// definition's hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<PinHashes>,
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
    file: Mutex<File>,
    sync: Arc<SyncState>,
    healthy: AtomicBool,
    path: PathBuf,
    /// Keep arguments in the clear instead of hashing them.
    pub keep_arguments: bool,
}

/// What the group-commit thread shares with the writers.
struct SyncState {
    /// Written since the last `fdatasync`.
    dirty: AtomicBool,
    /// The `Audit` is gone: sync once more and end.
    closed: AtomicBool,
    /// A failed `fdatasync` (the writers then report unhealthy).
    failed: AtomicBool,
}

impl Audit {
    /// Opens (appending) `<state_dir>/audit.jsonl` and starts the syncer.
    pub fn open(state_dir: &Path, keep_arguments: bool) -> Result<Audit, RelayError> {
        let path = state_dir.join("audit.jsonl");
        let file = open_append(&path).map_err(|source| RelayError::File {
            what: "cannot open the audit log",
            path: path.clone(),
            source,
        })?;
        let for_sync = file.try_clone().map_err(|source| RelayError::File {
            what: "cannot open the audit log",
            path: path.clone(),
            source,
        })?;
        let sync = Arc::new(SyncState {
            dirty: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        });
        let s = sync.clone();
        let p = path.clone();
        std::thread::Builder::new()
            .name("audit-sync".into())
            .spawn(move || sync_loop(for_sync, s, p))
            .map_err(|source| RelayError::File {
                what: "cannot start the audit syncer for",
                path: path.clone(),
                source,
            })?;
        Ok(Audit {
            file: Mutex::new(file),
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

    /// Writes an event now (see the durability rule above). A failed write
    /// marks the audit unhealthy, so the next requests are refused, and is
    /// reported in the log; the next successful write makes it healthy again.
    pub fn record(&self, event: AuditEvent) {
        let mut line = match serde_json::to_vec(&event) {
            Ok(l) => l,
            Err(e) => {
                self.healthy.store(false, Ordering::Release);
                tracing::error!(error = %e, "cannot encode an audit event: refusing requests");
                return;
            }
        };
        line.push(b'\n');
        let written = {
            let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
            file.write_all(&line)
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
        serde_json::Value::String(format!("sha256:{}", hex::encode(digest.as_ref())))
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
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

/// Group commit: `fdatasync` at most [`SYNC_EVERY`] after a write.
fn sync_loop(file: File, sync: Arc<SyncState>, path: PathBuf) {
    loop {
        std::thread::sleep(SYNC_EVERY);
        let closed = sync.closed.load(Ordering::Acquire);
        if sync.dirty.swap(false, Ordering::AcqRel) {
            match file.sync_data() {
                Ok(()) => {
                    if sync.failed.swap(false, Ordering::AcqRel) {
                        tracing::info!(path = %path.display(), "audit log syncs again");
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

/// Appends events to the audit log of `path` and syncs it, from a process
/// that does not run the relay (the `relay tools approve` command).
pub fn append(path: &Path, events: &[AuditEvent]) -> Result<(), RelayError> {
    let wrap = |source| RelayError::File {
        what: "cannot write the audit log",
        path: path.to_path_buf(),
        source,
    };
    let mut lines = Vec::new();
    for event in events {
        serde_json::to_writer(&mut lines, event).map_err(|e| wrap(e.into()))?;
        lines.push(b'\n');
    }
    // One write of whole lines: O_APPEND keeps it from interleaving with the
    // running relay's lines.
    let mut file = open_append(path).map_err(wrap)?;
    file.write_all(&lines).map_err(wrap)?;
    file.sync_data().map_err(wrap)
}

/// A filter for `relay audit`.
#[derive(Debug, Default)]
pub struct Query {
    pub route: Option<String>,
    /// Only events at or after this RFC 3339 time.
    pub since: Option<SystemTime>,
    pub decision: Option<String>,
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
        let dir = std::env::temp_dir().join(format!("dbr-audit-{}", crate::token::random_hex(6)));
        std::fs::create_dir_all(&dir).expect("dir");
        let audit = Audit::open(&dir, false).expect("open");
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
        let dir = std::env::temp_dir().join(format!("dbr-audit-{}", crate::token::random_hex(6)));
        std::fs::create_dir_all(&dir).expect("dir");
        let args = serde_json::json!({"query": "SELECT secret FROM t"});
        let hashed = Audit::open(&dir, false).expect("open").arguments(&args);
        assert!(hashed
            .as_str()
            .is_some_and(|s| s.starts_with("sha256:") && !s.contains("secret")));
        let kept = Audit::open(&dir, true).expect("open").arguments(&args);
        assert_eq!(kept, args);
        let _ = std::fs::remove_dir_all(dir);
    }
}
