//! Shipping the audit log into the cluster's table (nodes on one
//! PostgreSQL database): a background task copies each event of this
//! node's local log into `audit_events` ([`::store::AuditEvents`]), exactly
//! once.
//!
//! The request path never waits on the database: it writes the local file
//! as before (see [`crate::audit`]), and this task follows the file. An
//! event is keyed by the log's id ([`LOG_ID`], made once per state
//! directory, so it outlives the node's process) and its `seq` in the hash
//! chain; inserting it again changes nothing, and where shipping stands is
//! the highest `seq` stored for the log. So a node killed mid-ship resumes,
//! once restarted, after the last event the table holds: no gap, no
//! duplicate, across rotated files (their names say their last `seq`).
//!
//! A log id names one chain. If the local chain is not the one shipped
//! under it (its files were removed, `audit.node` kept: the new chain
//! starts at `seq` 1 again), the table's event at the highest `seq` does
//! not match the local one, or the local chain ends before it: the log
//! gets a new id (a warning says so) and the new chain is shipped whole
//! under it; nothing shipped before is changed.
//!
//! Only lines on disk are shipped (up to `audit.head`, written after each
//! `fdatasync`): a crash of the machine may lose the last 100 ms of the
//! file, and the table must never hold an event the chain then numbers
//! again. Batches of at most [`BATCH`] events, one in memory at a time; a
//! database outage only delays shipping (retried with back-off), as the
//! metrics `drawbridge_audit_events_shipped_total` and
//! `drawbridge_audit_ship_lag_events` show.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ::store::ShippedEvent;

use super::chain::{self as audit_chain, Link};
use super::AuditEvent;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The file in the state directory that holds the log's id in the table.
pub const LOG_ID: &str = "audit.node";
/// Events per batch, at most.
pub const BATCH: usize = 500;
/// Bytes of lines per batch, at most (a line may be large with
/// `--audit-arguments`).
const BATCH_BYTES: usize = 4 << 20;
/// How often the file is looked at when shipping has caught up.
const EVERY: Duration = Duration::from_millis(200);
/// The longest wait between attempts while the database fails.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// A database call that takes longer has failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The id of the audit log of `state_dir` in the cluster's table, made
/// (random) the first time.
pub fn log_id(state_dir: &Path) -> std::io::Result<String> {
    let path = state_dir.join(LOG_ID);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    new_log_id(state_dir)
}

/// Gives the audit log of `state_dir` a new id (random), in place of the one
/// it had: for a chain that is not the one shipped under the old id.
fn new_log_id(state_dir: &Path) -> std::io::Result<String> {
    let path = state_dir.join(LOG_ID);
    let id = crate::store::token::random_hex(8);
    let tmp = state_dir.join(format!("{LOG_ID}.tmp"));
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(format!("{id}\n").as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    File::open(state_dir)?.sync_all()?;
    Ok(id)
}

/// The last `seq` known to be on disk (`audit.head`), 0 when none is.
fn synced_seq(state_dir: &Path) -> u64 {
    match audit_chain::read_head(state_dir) {
        Ok(Some(Ok(head))) => head.seq,
        _ => 0,
    }
}

/// The local log's event at a `seq` the table holds.
#[derive(Debug, PartialEq)]
enum LocalEvent {
    /// Its hash.
    Found(String),
    /// The chain goes past it, and its line is not in the files (they were
    /// cut by hand): nothing to compare.
    Missing,
    /// The chain ends before it.
    Beyond,
}

/// The event `seq` (at least 1) of the log in `dir`, whichever file holds
/// it (lines not yet synced included: the table never holds them).
fn local_event(dir: &Path, seq: u64) -> std::io::Result<LocalEvent> {
    let lines = Reader::new(dir, seq.saturating_sub(1)).read(u64::MAX)?;
    Ok(match lines.into_iter().next() {
        Some(line) if line.seq == seq => LocalEvent::Found(line.hash),
        Some(_) => LocalEvent::Missing,
        None => LocalEvent::Beyond,
    })
}

/// Whether the local log is the chain shipped under its id, as far as the
/// table's last event (`stored`: its hash) and the local one at its `seq`
/// tell.
fn same_chain(stored: Option<&str>, local: &LocalEvent) -> bool {
    match (stored, local) {
        (Some(stored), LocalEvent::Found(hash)) => stored == hash,
        (_, LocalEvent::Missing) => true,
        (_, LocalEvent::Beyond) => false,
        // The table holds no event there (it cannot be: the highest seq).
        (None, LocalEvent::Found(_)) => true,
    }
}

/// One sealed line read from the log.
struct Line {
    seq: u64,
    hash: String,
    text: String,
}

/// The file being read.
struct Open {
    file: BufReader<File>,
    /// Where the next unread line starts.
    offset: u64,
    /// Opened as `audit.jsonl` (its inode, to notice a rotation), or as a
    /// rotated file (`None`).
    live: Option<(u64, u64)>,
    /// A rotated live file: read it to its end, then go on.
    retired: bool,
}

/// Follows the log's files in the chain's order from a `seq` on.
pub struct Reader {
    dir: PathBuf,
    /// The last `seq` read (every line up to it was handed out).
    pos: u64,
    open: Option<Open>,
}

impl Reader {
    /// Reads the lines after `seq` of the log in `dir`.
    pub fn new(dir: &Path, seq: u64) -> Reader {
        Reader {
            dir: dir.to_path_buf(),
            pos: seq,
            open: None,
        }
    }

    /// The next sealed lines with a `seq` after the last read, up to
    /// `limit` (at most [`BATCH`] lines, [`BATCH_BYTES`] bytes).
    fn read(&mut self, limit: u64) -> std::io::Result<Vec<Line>> {
        let mut lines = Vec::new();
        let mut bytes = 0;
        let mut buf = Vec::new();
        while lines.len() < BATCH && bytes < BATCH_BYTES && self.pos < limit {
            if self.open.is_none() {
                self.open = self.open_next()?;
                if self.open.is_none() {
                    break;
                }
            }
            let Some(open) = self.open.as_mut() else {
                break;
            };
            buf.clear();
            let n = open.file.read_until(b'\n', &mut buf)?;
            if n > 0 && buf.last() == Some(&b'\n') {
                let line = &buf[..buf.len() - 1];
                if let Link::Sealed { seq, hash, .. } = audit_chain::link(line) {
                    if seq > limit {
                        // Not on disk yet: read it again next time.
                        open.file.seek(SeekFrom::Start(open.offset))?;
                        break;
                    }
                    if seq > self.pos {
                        if let Ok(text) = String::from_utf8(line.to_vec()) {
                            bytes += text.len();
                            lines.push(Line { seq, hash, text });
                        }
                        self.pos = seq;
                    }
                }
                // Lines that are not sealed (torn by a crash, written
                // before the chain) are not events.
                open.offset += n as u64;
                continue;
            }
            // The end of the file (or a line still being written, or a torn
            // last line): read it again from its start next time.
            open.file.seek(SeekFrom::Start(open.offset))?;
            match open.live {
                None => self.open = None,
                Some(_) if open.retired => self.open = None,
                Some(ino) => {
                    let now = std::fs::metadata(self.dir.join(audit_chain::LOG))
                        .ok()
                        .map(|m| (m.dev(), m.ino()));
                    if now == Some(ino) {
                        break;
                    }
                    // Rotated: what was written before the rename is in it.
                    open.retired = true;
                }
            }
        }
        Ok(lines)
    }

    /// The first file that may hold lines after `pos`: the oldest rotated
    /// file whose last `seq` (its name) is after it, else `audit.jsonl`.
    fn open_next(&self) -> std::io::Result<Option<Open>> {
        for path in audit_chain::files(&self.dir)? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name == audit_chain::LOG {
                let file = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                let m = file.metadata()?;
                return Ok(Some(Open {
                    file: BufReader::new(file),
                    offset: 0,
                    live: Some((m.dev(), m.ino())),
                    retired: false,
                }));
            }
            let last = name
                .strip_prefix("audit-")
                .and_then(|n| n.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            if last > self.pos {
                return Ok(Some(Open {
                    file: BufReader::new(File::open(&path)?),
                    offset: 0,
                    live: None,
                    retired: false,
                }));
            }
        }
        Ok(None)
    }
}

/// A line as the table holds it.
fn shipped(log: &str, line: Line) -> ShippedEvent {
    let event: AuditEvent = serde_json::from_str(&line.text).unwrap_or_default();
    let time_ms = humantime::parse_rfc3339_weak(&event.time)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    ShippedEvent {
        node: log.to_owned(),
        seq: line.seq as i64,
        hash: line.hash,
        time: event.time,
        time_ms,
        request_id: event.request_id,
        route: event.route,
        decision: event.decision,
        line: line.text,
    }
}

/// Why one round of shipping failed.
#[derive(Debug, thiserror::Error)]
enum ShipError {
    #[error("cannot read the audit log: {0}")]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] ::store::StoreError),
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the audit reader failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The shipping of one log.
struct Shipper {
    store: Arc<dyn ::store::Store>,
    metrics: Arc<Metrics>,
    dir: PathBuf,
    log: String,
    /// The reader, positioned after the last event shipped (`None`: ask
    /// the table where shipping stands).
    reader: Option<Reader>,
    /// The last `seq` shipped.
    shipped: u64,
    /// Read, not yet stored (stored again after a failure).
    pending: Vec<ShippedEvent>,
}

impl Shipper {
    /// Ships one batch. True when it was full (more may be waiting).
    async fn round(&mut self) -> Result<bool, ShipError> {
        let store = &self.store;
        if self.reader.is_none() {
            let mut up_to = bounded(store.audit_shipped_up_to(&self.log)).await?;
            if up_to > 0 && !self.same_chain(up_to).await? {
                let new = new_log_id(&self.dir)?;
                let old = std::mem::replace(&mut self.log, new);
                tracing::warn!(
                    old_log = %old,
                    new_log = %self.log,
                    shipped = up_to,
                    "the local audit log is not the chain shipped under its id (its files were removed \
                     or replaced, {LOG_ID} kept): shipping it under a new log id; the events shipped \
                     under the old one stay in the table"
                );
                up_to = bounded(store.audit_shipped_up_to(&self.log)).await?;
            }
            self.shipped = up_to.max(0) as u64;
            self.pending.clear();
            self.reader = Some(Reader::new(&self.dir, self.shipped));
        }
        let synced = synced_seq(&self.dir);
        let mut full = false;
        if self.pending.is_empty() {
            let Some(mut reader) = self.reader.take() else {
                return Ok(false);
            };
            let (reader, lines) = tokio::task::spawn_blocking(move || {
                let lines = reader.read(synced);
                (reader, lines)
            })
            .await?;
            self.reader = Some(reader);
            let lines = lines?;
            full = lines.len() >= BATCH;
            self.pending = lines.into_iter().map(|l| shipped(&self.log, l)).collect();
        }
        if let Some(last) = self.pending.last() {
            let last = last.seq as u64;
            let new = bounded(store.ship_audit_events(&self.pending)).await?;
            self.metrics.audit_shipped(new);
            self.shipped = last;
            self.pending.clear();
        }
        self.metrics
            .audit_ship_lag(synced.saturating_sub(self.shipped));
        Ok(full)
    }
}

impl Shipper {
    /// Whether the local log is the chain the table holds up to `up_to`
    /// under this log's id.
    async fn same_chain(&self, up_to: i64) -> Result<bool, ShipError> {
        let stored = bounded(self.store.audit_shipped_hash(&self.log, up_to)).await?;
        let dir = self.dir.clone();
        let local =
            tokio::task::spawn_blocking(move || local_event(&dir, up_to.max(0) as u64)).await??;
        Ok(same_chain(stored.as_deref(), &local))
    }
}

async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, ::store::StoreError>>,
) -> Result<T, ShipError> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .map_err(|_| ShipError::Timeout(CALL_TIMEOUT))?
        .map_err(ShipError::from)
}

/// Ships the audit log of the state directory `dir` into the cluster's
/// table (`store`) until `shutdown` (then once more, briefly).
pub async fn run(
    store: Arc<dyn ::store::Store>,
    metrics: Arc<Metrics>,
    dir: PathBuf,
    shutdown: CancellationToken,
) {
    let log = match log_id(&dir) {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(path = %dir.join(LOG_ID).display(), error = %e, "cannot read or make the audit log's id: its events are not shipped to the database");
            return;
        }
    };
    tracing::info!(log = %log, "shipping the audit log to the database");
    let mut shipper = Shipper {
        store,
        metrics,
        dir,
        log,
        reader: None,
        shipped: 0,
        pending: Vec::new(),
    };
    let mut wait = EVERY;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break,
        }
        match shipper.round().await {
            Ok(full) => {
                if failing {
                    tracing::info!("audit shipping resumed");
                    failing = false;
                }
                wait = if full { Duration::ZERO } else { EVERY };
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot ship audit events (retrying; they stay in the local log)");
                    failing = true;
                }
                if matches!(e, ShipError::Task(_) | ShipError::Read(_)) {
                    // Start again from what the table holds.
                    shipper.reader = None;
                }
                wait = (wait * 2).clamp(EVERY, RETRY_MAX);
            }
        }
    }
    // Shutting down: what was written until now, if the database answers
    // quickly (else the next start ships it).
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(true) = shipper.round().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("dbr-ship-{}", crate::store::token::random_hex(6)));
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    fn event(i: usize) -> AuditEvent {
        AuditEvent {
            time: super::super::now_rfc3339(),
            request_id: format!("r{i}"),
            ..Default::default()
        }
    }

    /// Every sealed line once, in order, across rotations and torn lines,
    /// from any position, never past the limit.
    #[test]
    fn the_reader_hands_out_each_line_once_across_rotation() {
        let dir = dir();
        let audit = super::super::Audit::open(&dir, false, 1500).expect("open");
        let mut reader = Reader::new(&dir, 0);
        let mut seen = Vec::new();
        for i in 0..40 {
            audit.record(event(i));
            if i == 7 {
                // A torn line, chained past by the next.
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(dir.join(audit_chain::LOG))
                    .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"time\":"))
                    .expect("torn");
            }
            if i % 3 == 0 {
                seen.extend(
                    reader
                        .read(u64::MAX)
                        .expect("read")
                        .into_iter()
                        .map(|l| l.seq),
                );
            }
        }
        seen.extend(
            reader
                .read(u64::MAX)
                .expect("read")
                .into_iter()
                .map(|l| l.seq),
        );
        assert!(
            audit_chain::files(&dir).expect("files").len() > 3,
            "rotated"
        );
        assert_eq!(seen, (1..=40).collect::<Vec<u64>>());
        // From a position (a restart after shipping 17), with a limit.
        let mut again = Reader::new(&dir, 17);
        let lines = again.read(30).expect("read");
        assert_eq!(
            lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
            (18..=30).collect::<Vec<u64>>()
        );
        assert!(lines[0].text.contains("\"request_id\":\"r17\""));
        let rest: Vec<_> = again
            .read(u64::MAX)
            .expect("read")
            .iter()
            .map(|l| l.seq)
            .collect();
        assert_eq!(rest, (31..=40).collect::<Vec<u64>>());
        assert!(again.read(u64::MAX).expect("read").is_empty());
        drop(audit);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The local event at a `seq` the table holds: found (its hash),
    /// missing from files cut by hand, or past the end of a chain that
    /// started again.
    #[test]
    fn the_local_event_at_the_tables_last_seq_tells_a_new_chain() {
        let dir = dir();
        let audit = super::super::Audit::open(&dir, false, 1500).expect("open");
        for i in 0..30 {
            audit.record(event(i));
        }
        drop(audit);
        let lines = Reader::new(&dir, 0).read(u64::MAX).expect("read");
        let at = |seq: u64| lines[seq as usize - 1].hash.clone();
        assert_eq!(local_event(&dir, 1).expect("1"), LocalEvent::Found(at(1)));
        assert_eq!(
            local_event(&dir, 20).expect("20"),
            LocalEvent::Found(at(20))
        );
        assert_eq!(local_event(&dir, 31).expect("31"), LocalEvent::Beyond);
        assert!(same_chain(Some(&at(20)), &LocalEvent::Found(at(20))));
        assert!(!same_chain(Some(&at(19)), &LocalEvent::Found(at(20))));
        assert!(!same_chain(Some(&at(20)), &LocalEvent::Beyond));
        // The oldest rotated file removed: the chain goes on past it.
        let oldest = audit_chain::files(&dir).expect("files")[0].clone();
        assert_ne!(
            oldest.file_name().and_then(|n| n.to_str()),
            Some(audit_chain::LOG)
        );
        std::fs::remove_file(&oldest).expect("remove");
        assert_eq!(local_event(&dir, 1).expect("1"), LocalEvent::Missing);
        assert!(same_chain(Some(&at(1)), &LocalEvent::Missing));

        // Every file removed, and a new chain of 5 events: seq 5 is not the
        // old chain's, seq 20 is past its end.
        for f in audit_chain::files(&dir).expect("files") {
            std::fs::remove_file(f).expect("remove");
        }
        let _ = std::fs::remove_file(dir.join(audit_chain::HEAD));
        let audit = super::super::Audit::open(&dir, false, 1500).expect("open again");
        for i in 0..5 {
            audit.record(event(100 + i));
        }
        drop(audit);
        let LocalEvent::Found(new) = local_event(&dir, 5).expect("5") else {
            panic!("the new chain has seq 5");
        };
        assert!(!same_chain(Some(&at(5)), &LocalEvent::Found(new)));
        assert_eq!(local_event(&dir, 20).expect("20"), LocalEvent::Beyond);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_new_log_id_replaces_the_old() {
        let dir = dir();
        let id = log_id(&dir).expect("made");
        let new = new_log_id(&dir).expect("new");
        assert_ne!(new, id);
        assert_eq!(log_id(&dir).expect("read"), new);
        assert!(!dir.join(format!("{LOG_ID}.tmp")).exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_log_id_is_made_once() {
        let dir = dir();
        let id = log_id(&dir).expect("made");
        assert_eq!(id.len(), 16);
        assert_eq!(log_id(&dir).expect("read"), id);
        let _ = std::fs::remove_dir_all(dir);
    }
}
