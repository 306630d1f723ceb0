//! `relay audit verify`: walks the hash chain of audit files (see
//! [`crate::audit::chain`]) and names the first line that was changed,
//! removed, inserted or reordered.

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};

use crate::audit::chain::{self as audit_chain, link, Head, Link, GENESIS};

/// Where the chain is broken: the first bad line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {what}", file.display())]
pub struct Broken {
    pub file: PathBuf,
    /// 1-based line number in `file`.
    pub line: u64,
    pub what: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the audit chain is broken at {0}")]
    Broken(Broken),
    #[error("{} is damaged ({text:?}): it should hold the seq and hash of the log's last line", path.display())]
    Head { path: PathBuf, text: String },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An intact chain.
#[derive(Debug, Default)]
pub struct Report {
    pub files: usize,
    pub lines: u64,
    /// The sealed lines' first and last `seq`.
    pub first_seq: Option<u64>,
    pub last: Option<Head>,
    /// Where the first file's chain starts: genesis, or the hash of a line
    /// of a file not given.
    pub starts_from: Option<String>,
    /// Things that are not breaks: lines from before the chain, torn lines
    /// the relay chained past after a crash.
    pub notes: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "audit chain intact: {} line(s) in {} file(s)",
            self.lines, self.files
        )?;
        if let (Some(first), Some(last)) = (self.first_seq, &self.last) {
            write!(f, ", seq {first}..{}", last.seq)?;
            match self.starts_from.as_deref() {
                Some(GENESIS) => write!(f, " from genesis")?,
                Some(prev) => write!(
                    f,
                    " continuing seq {} (hash {prev}) of an earlier file not given",
                    first - 1
                )?,
                None => {}
            }
            write!(f, "; last hash {}", last.hash)?;
        }
        for note in &self.notes {
            write!(f, "\nnote: {note}")?;
        }
        Ok(())
    }
}

/// `relay audit verify [FILE…]`: verifies `files`, or with none every audit
/// file of `state_dir` in order. The chain must reach `audit.head` of
/// `state_dir` when the files end with its live `audit.jsonl`.
pub fn verify_files(state_dir: &Path, files: &[PathBuf]) -> Result<Report, VerifyError> {
    let files = if files.is_empty() {
        audit_chain::files(state_dir).map_err(|source| VerifyError::Read {
            path: state_dir.to_path_buf(),
            source,
        })?
    } else {
        files.to_vec()
    };
    let live = state_dir.join(audit_chain::LOG).canonicalize().ok();
    let ends_live = live.is_some() && files.last().and_then(|f| f.canonicalize().ok()) == live;
    let head = if ends_live {
        let path = state_dir.join(audit_chain::HEAD);
        match audit_chain::read_head(state_dir) {
            Ok(None) => None,
            Ok(Some(Ok(head))) => Some(head),
            Ok(Some(Err(text))) => return Err(VerifyError::Head { path, text }),
            Err(source) => return Err(VerifyError::Read { path, source }),
        }
    } else {
        None
    };
    verify(&files, head.as_ref())
}

/// A line seen, and where.
struct Seen {
    file: usize,
    line: u64,
}

/// Verifies `files` as one chain, in this order. With `head` (the state
/// dir's `audit.head`), the chain must also reach it: lines removed from the
/// end are a break.
pub fn verify(files: &[PathBuf], head: Option<&Head>) -> Result<Report, VerifyError> {
    let mut report = Report {
        files: files.len(),
        ..Default::default()
    };
    let broken = |file: &Path, line: u64, what: String| {
        VerifyError::Broken(Broken {
            file: file.to_path_buf(),
            line,
            what,
        })
    };
    // The link the next line must follow (None before the first line).
    let mut prev: Option<Head> = None;
    let mut prev_at: Option<Seen> = None;
    let mut sealed_seen = false;
    // A line that is not an audit line, accepted only if the next line
    // chains past it (a torn line after a crash).
    let mut torn: Option<Seen> = None;
    let mut legacy = 0u64;
    let mut head_line: Option<(Seen, String)> = None;
    for (fi, path) in files.iter().enumerate() {
        let read_err = |source| VerifyError::Read {
            path: path.clone(),
            source,
        };
        let mut reader = BufReader::new(File::open(path).map_err(read_err)?);
        let mut n = 0u64;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(read_err)? == 0 {
                break;
            }
            n += 1;
            report.lines += 1;
            let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
            match link(line) {
                Link::Changed => {
                    return Err(broken(
                        path,
                        n,
                        "this line was changed: its content does not match its hash".into(),
                    ));
                }
                Link::Unsealed { hash, object } => {
                    if object && sealed_seen {
                        return Err(broken(
                            path,
                            n,
                            "this line has no hash: inserted, or changed after it was written"
                                .into(),
                        ));
                    }
                    if object {
                        legacy += 1;
                    } else if let Some(t) = torn.take() {
                        return Err(not_a_line(files, &t));
                    } else {
                        torn = Some(Seen { file: fi, line: n });
                    }
                    prev = Some(Head {
                        seq: prev.as_ref().map_or(0, |p| p.seq),
                        hash,
                    });
                    prev_at = Some(Seen { file: fi, line: n });
                }
                Link::Sealed {
                    seq,
                    prev: named,
                    hash,
                } => {
                    match &prev {
                        None => {
                            if named == GENESIS && seq != 1 {
                                return Err(broken(
                                    path,
                                    n,
                                    format!("this line starts the chain (genesis) but has seq {seq}, not 1: lines before it were removed"),
                                ));
                            }
                            report.starts_from = Some(named.clone());
                        }
                        Some(p) => {
                            let want = p.seq + 1;
                            if seq != want && sealed_seen {
                                let what = if seq > want {
                                    format!(
                                        "{} line(s) before this one are missing (seq {} expected, {seq} found): removed, or lines reordered",
                                        seq - want,
                                        want
                                    )
                                } else {
                                    format!("this line is out of order (seq {want} expected, {seq} found): lines reordered or repeated")
                                };
                                return Err(broken(path, n, what));
                            }
                            if named != p.hash {
                                if let Some(t) = torn.take() {
                                    return Err(not_a_line(files, &t));
                                }
                                let (file, line) = match &prev_at {
                                    Some(at) => (&files[at.file], at.line),
                                    None => (path, n),
                                };
                                return Err(if seq != want {
                                    broken(
                                        path,
                                        n,
                                        format!("this line does not follow the line before it (seq {want} expected, {seq} found)"),
                                    )
                                } else {
                                    broken(
                                        file,
                                        line,
                                        format!("this line was changed or replaced: the next line (seq {seq}) names a different hash for it"),
                                    )
                                });
                            }
                            if !sealed_seen && report.starts_from.is_none() {
                                report.starts_from = Some(named.clone());
                            }
                        }
                    }
                    if let Some(t) = torn.take() {
                        report.notes.push(format!(
                            "{}:{} is a torn line (a crash while it was written); the relay chained past it",
                            files[t.file].display(),
                            t.line
                        ));
                    }
                    if head.is_some_and(|h| h.seq == seq) {
                        head_line = Some((Seen { file: fi, line: n }, hash.clone()));
                    }
                    sealed_seen = true;
                    report.first_seq.get_or_insert(seq);
                    prev = Some(Head { seq, hash });
                    prev_at = Some(Seen { file: fi, line: n });
                }
            }
        }
    }
    if let Some(t) = torn {
        let path = &files[t.file];
        return Err(broken(
            path,
            t.line,
            "this line is incomplete: the log was cut here (truncated, or a crash while writing it and the relay has not written since)".into(),
        ));
    }
    if legacy > 0 {
        report.notes.push(format!(
            "{legacy} line(s) were written before the audit log was chained: not protected"
        ));
    }
    if let Some(h) = head {
        let last_seq = prev.as_ref().map_or(0, |p| p.seq);
        match head_line {
            Some((at, hash)) if hash != h.hash => {
                return Err(broken(
                    &files[at.file],
                    at.line,
                    format!(
                        "this line (seq {}) is not the one the relay wrote (audit.head names hash {})",
                        h.seq, h.hash
                    ),
                ));
            }
            None if last_seq < h.seq => {
                let (file, line) = match &prev_at {
                    Some(at) => (files[at.file].clone(), at.line),
                    None => (files.last().cloned().unwrap_or_default(), 0),
                };
                return Err(broken(
                    &file,
                    line,
                    format!(
                        "the log ends here at seq {last_seq}, but the relay wrote up to seq {} (audit.head): {} line(s) removed from the end",
                        h.seq,
                        h.seq - last_seq
                    ),
                ));
            }
            _ => {}
        }
    }
    report.last = prev.filter(|_| sealed_seen);
    Ok(report)
}

fn not_a_line(files: &[PathBuf], t: &Seen) -> VerifyError {
    VerifyError::Broken(Broken {
        file: files[t.file].clone(),
        line: t.line,
        what: "this line is not an audit line (inserted or damaged)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::seal;

    fn chain(n: usize) -> Vec<Vec<u8>> {
        let mut head = Head::genesis();
        (0..n)
            .map(|i| {
                let (line, h) = seal(format!(r#"{{"request_id":"r{i}"}}"#).as_bytes(), &head);
                head = h;
                line
            })
            .collect()
    }

    fn check(lines: &[Vec<u8>], head: Option<&Head>) -> Result<Report, VerifyError> {
        let dir =
            std::env::temp_dir().join(format!("dbr-verify-{}", crate::store::token::random_hex(6)));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("audit.jsonl");
        std::fs::write(&path, lines.concat()).expect("write");
        let r = verify(std::slice::from_ref(&path), head);
        let _ = std::fs::remove_dir_all(dir);
        r
    }

    fn broken_line(r: Result<Report, VerifyError>) -> (u64, String) {
        match r {
            Err(VerifyError::Broken(b)) => (b.line, b.what),
            other => panic!("not broken: {other:?}"),
        }
    }

    #[test]
    fn every_kind_of_tampering_names_its_line() {
        let lines = chain(5);
        let report = check(&lines, None).expect("intact");
        assert_eq!((report.lines, report.first_seq), (5, Some(1)));
        // Changed.
        let mut edited = lines.clone();
        edited[2] = String::from_utf8(edited[2].clone())
            .expect("utf8")
            .replace("r2", "rX")
            .into_bytes();
        assert_eq!(broken_line(check(&edited, None)).0, 3);
        // Removed.
        let mut removed = lines.clone();
        removed.remove(1);
        let (at, what) = broken_line(check(&removed, None));
        assert_eq!(at, 2);
        assert!(what.contains("missing"), "{what}");
        // Swapped.
        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        assert_eq!(broken_line(check(&swapped, None)).0, 2);
        // Cut mid-line.
        let mut cut = lines.concat();
        cut.truncate(cut.len() - 10);
        assert_eq!(broken_line(check(&[cut], None)).0, 5);
        // Lines removed from the end: only audit.head tells.
        let last = report.last.expect("last");
        assert!(check(&lines[..3], None).is_ok());
        let (at, what) = broken_line(check(&lines[..3], Some(&last)));
        assert_eq!(at, 3);
        assert!(what.contains("2 line(s) removed from the end"), "{what}");
    }

    #[test]
    fn a_torn_line_chained_past_is_a_note() {
        let lines = chain(2);
        let head = match link(lines[1].strip_suffix(b"\n").expect("nl")) {
            Link::Sealed { seq, hash, .. } => Head { seq, hash },
            other => panic!("{other:?}"),
        };
        let torn = br#"{"time":"2026"#.to_vec();
        let after = Head {
            seq: head.seq,
            hash: crate::audit::chain::sha256_hex(&torn),
        };
        let (next, _) = seal(br#"{"request_id":"after"}"#, &after);
        let mut with_torn = lines.clone();
        with_torn.push([torn.clone(), b"\n".to_vec()].concat());
        with_torn.push(next);
        let report = check(&with_torn, None).expect("intact");
        assert_eq!(report.notes.len(), 1, "{report}");
        // Not chained past: the log was cut there.
        let mut cut = lines.clone();
        cut.push(torn);
        assert_eq!(broken_line(check(&cut, None)).0, 3);
    }
}
