//! The audit log's hash chain: what makes a changed, removed or reordered
//! line evident.
//!
//! Every line the relay writes is one JSON object that ends with three
//! members, in this order:
//!
//! * `seq` — the line's number in the chain, 1 for its first line, counted
//!   on across rotated files;
//! * `prev` — the `hash` of the line before it (the last line of the
//!   previous file for a file's first line), or `"genesis"` for the chain's
//!   first line;
//! * `hash` — the hex SHA-256 of the line's own bytes up to `,"hash":`,
//!   followed by `}` (so of the object without its `hash` member).
//!
//! A line that is not sealed like this (a torn line after a crash, or a line
//! written before the chain existed) is linked by the SHA-256 of its raw
//! bytes: the relay chains the next line past it.
//!
//! Rotated files are `audit-<seq of their last line, 12 digits>.jsonl` next
//! to `audit.jsonl`; their names sort in the chain's order. `audit.head`
//! holds the `seq` and `hash` of the last line known to be on disk (written
//! after each `fdatasync`), so that lines removed from the end of the log
//! are evident too.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `prev` of the chain's first line.
pub const GENESIS: &str = "genesis";
/// The live log in the state dir.
pub const LOG: &str = "audit.jsonl";
/// The lock every writer of the log holds while appending or rotating.
pub const LOCK: &str = "audit.lock";
/// The last line known to be on disk.
pub const HEAD: &str = "audit.head";

const HASH_KEY: &[u8] = b",\"hash\":\"";
/// `,"hash":"` + 64 hex digits + `"}`.
const HASH_SUFFIX_LEN: usize = HASH_KEY.len() + 64 + 2;

/// The last link of the chain: the next line gets `seq + 1` and names `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    /// Before the chain's first line.
    pub fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }

    /// The `audit.head` file's text (fixed length, so it can be rewritten
    /// in place).
    pub fn to_file_text(&self) -> String {
        format!("{:020} {}\n", self.seq, self.hash)
    }

    pub fn from_file_text(text: &str) -> Option<Head> {
        let (seq, hash) = text.trim_end().split_once(' ')?;
        let hash = hash.trim();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Head {
            seq: seq.parse().ok()?,
            hash: hash.to_owned(),
        })
    }
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    lower_hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Lowercase hex of `bytes` (as `hex::encode`, without its `char` at a time).
pub fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Seals one event (a JSON object without `seq`, `prev`, `hash`) as the link
/// after `head`: the line to append (with its newline) and the new head.
pub fn seal(object: &[u8], head: &Head) -> (Vec<u8>, Head) {
    let seq = head.seq + 1;
    let open = object.strip_suffix(b"}").unwrap_or(object);
    let mut line = Vec::with_capacity(object.len() + 180);
    line.extend_from_slice(open);
    if open.trim_ascii() != b"{" {
        line.push(b',');
    }
    // The hash covers the object as it is without its `hash` member.
    let _ = write!(line, "\"seq\":{seq},\"prev\":\"{}\"}}", head.hash);
    let hash = sha256_hex(&line);
    line.pop();
    line.extend_from_slice(HASH_KEY);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    (line, Head { seq, hash })
}

/// What one line of the log is, as a link of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// A sealed line whose hash matches its content.
    Sealed {
        seq: u64,
        prev: String,
        hash: String,
    },
    /// A line without a seal: `hash` is the SHA-256 of its bytes. `object`:
    /// it is a whole JSON object (a line from before the chain, or one
    /// written without a seal) rather than a torn or foreign line.
    Unsealed { hash: String, object: bool },
    /// Sealed, but its content does not match its hash, or its `seq` and
    /// `prev` are missing: the line was changed.
    Changed,
}

#[derive(Deserialize)]
struct ChainFields {
    seq: u64,
    prev: String,
}

/// Reads one line (without its newline) as a link.
pub fn link(line: &[u8]) -> Link {
    if let Some(claimed) = sealed_hash(line) {
        let mut body = line[..line.len() - HASH_SUFFIX_LEN].to_vec();
        body.push(b'}');
        if sha256_hex(&body) != claimed {
            return Link::Changed;
        }
        return match serde_json::from_slice::<ChainFields>(&body) {
            Ok(f) => Link::Sealed {
                seq: f.seq,
                prev: f.prev,
                hash: claimed.to_owned(),
            },
            Err(_) => Link::Changed,
        };
    }
    let object = serde_json::from_slice::<serde_json::Value>(line).is_ok_and(|v| v.is_object());
    Link::Unsealed {
        hash: sha256_hex(line),
        object,
    }
}

/// The `hash` a line claims, if it ends like a sealed line.
fn sealed_hash(line: &[u8]) -> Option<&str> {
    let suffix = line
        .len()
        .checked_sub(HASH_SUFFIX_LEN)
        .map(|at| &line[at..])?;
    let hex = suffix.strip_prefix(HASH_KEY)?.strip_suffix(b"\"}")?;
    if !hex
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return None;
    }
    std::str::from_utf8(hex).ok()
}

/// Where a log file ends, as the chain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// The link the next line must follow.
    pub head: Head,
    /// The file does not end with a newline (a torn last line after a
    /// crash): the next line must start with one.
    pub torn: bool,
}

/// The tail of `file`; `None` when it is empty. Reads backwards from the end
/// only as far as the last sealed line.
pub fn tail(file: &File) -> std::io::Result<Option<Tail>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    let torn = last[0] != b'\n';
    let mut end = if torn { len } else { len - 1 };
    let mut hash = None;
    loop {
        let (start, line) = line_ending_at(file, end)?;
        match link(&line) {
            Link::Sealed { seq, hash: h, .. } => {
                return Ok(Some(Tail {
                    head: Head {
                        seq,
                        hash: hash.unwrap_or(h),
                    },
                    torn,
                }));
            }
            // A changed line links by its bytes (verify names it).
            Link::Unsealed { hash: h, .. } => {
                hash.get_or_insert(h);
            }
            Link::Changed => {
                hash.get_or_insert_with(|| sha256_hex(&line));
            }
        }
        if start == 0 {
            // No sealed line at all: a log from before the chain.
            return Ok(Some(Tail {
                head: Head {
                    seq: 0,
                    hash: hash.unwrap_or_else(|| GENESIS.to_owned()),
                },
                torn,
            }));
        }
        end = start - 1;
    }
}

/// The line of `file` that ends at byte `end` (exclusive, its newline not
/// included): its first byte's offset and its bytes.
fn line_ending_at(file: &File, end: u64) -> std::io::Result<(u64, Vec<u8>)> {
    const STEP: u64 = 8192;
    let mut start = end;
    let mut line: Vec<u8> = Vec::new();
    while start > 0 {
        let from = start.saturating_sub(STEP);
        let mut chunk = vec![0u8; (start - from) as usize];
        file.read_exact_at(&mut chunk, from)?;
        if let Some(nl) = chunk.iter().rposition(|&b| b == b'\n') {
            chunk.drain(..=nl);
            chunk.extend_from_slice(&line);
            return Ok((from + nl as u64 + 1, chunk));
        }
        chunk.extend_from_slice(&line);
        line = chunk;
        start = from;
    }
    Ok((0, line))
}

/// The name of the rotated file whose last line is `seq`.
pub fn archive_name(seq: u64) -> String {
    format!("audit-{seq:012}.jsonl")
}

/// The audit files of `state_dir` in the chain's order: the rotated ones,
/// then `audit.jsonl` (when it exists).
pub fn files(state_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut archives = Vec::new();
    for entry in std::fs::read_dir(state_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name
            .strip_prefix("audit-")
            .and_then(|n| n.strip_suffix(".jsonl"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            archives.push(entry.path());
        }
    }
    archives.sort();
    let live = state_dir.join(LOG);
    if live.exists() {
        archives.push(live);
    }
    Ok(archives)
}

/// The head the chain continues from when `audit.jsonl` is empty: the last
/// rotated file's tail, else genesis.
pub fn head_before_live(state_dir: &Path) -> std::io::Result<Head> {
    let files = files(state_dir)?;
    for path in files.iter().rev() {
        if path.file_name().is_some_and(|n| n == LOG) {
            continue;
        }
        if let Some(t) = tail(&File::open(path)?)? {
            return Ok(t.head);
        }
    }
    Ok(Head::genesis())
}

/// Reads `audit.head` of `state_dir`: `Ok(None)` when there is none.
pub fn read_head(state_dir: &Path) -> std::io::Result<Option<Result<Head, String>>> {
    match std::fs::read_to_string(state_dir.join(HEAD)) {
        Ok(text) => Ok(Some(Head::from_file_text(&text).ok_or(text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Rewrites `audit.head` (open, `file`) in place.
pub fn write_head(file: &File, head: &Head) -> std::io::Result<()> {
    file.write_all_at(head.to_file_text().as_bytes(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_hex_is_hex_encode() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(lower_hex(&bytes), hex::encode(&bytes));
        assert_eq!(lower_hex(&[]), "");
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_sealed_line_links_to_its_predecessor_and_detects_changes() {
        let (line, head) = seal(br#"{"a":1}"#, &Head::genesis());
        let text = std::str::from_utf8(&line).expect("utf8");
        assert!(text.starts_with(r#"{"a":1,"seq":1,"prev":"genesis","hash":""#));
        assert!(text.ends_with("\"}\n"));
        let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(v["hash"], head.hash.as_str());
        assert_eq!(
            link(&line[..line.len() - 1]),
            Link::Sealed {
                seq: 1,
                prev: GENESIS.into(),
                hash: head.hash.clone()
            }
        );
        let (second, _) = seal(br#"{"b":2}"#, &head);
        assert!(std::str::from_utf8(&second)
            .expect("utf8")
            .contains(&format!(r#""seq":2,"prev":"{}""#, head.hash)));
        let changed = text.trim_end().replace(r#""a":1"#, r#""a":2"#);
        assert_eq!(link(changed.as_bytes()), Link::Changed);
        assert!(matches!(
            link(br#"{"time":"#),
            Link::Unsealed { object: false, .. }
        ));
        assert!(matches!(
            link(br#"{"time":"x"}"#),
            Link::Unsealed { object: true, .. }
        ));
    }

    #[test]
    fn the_tail_of_a_torn_file_chains_past_the_torn_line() {
        let dir =
            std::env::temp_dir().join(format!("dbr-chain-{}", crate::store::token::random_hex(6)));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(LOG);
        let (one, h1) = seal(br#"{"a":1}"#, &Head::genesis());
        let (two, h2) = seal(br#"{"a":2}"#, &h1);
        std::fs::write(&path, [one, two.clone()].concat()).expect("write");
        let t = tail(&File::open(&path).expect("open")).expect("tail");
        assert_eq!(
            t,
            Some(Tail {
                head: h2.clone(),
                torn: false
            })
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        file.write_all(br#"{"time":"#).expect("write");
        let t = tail(&File::open(&path).expect("open"))
            .expect("tail")
            .expect("some");
        assert!(t.torn);
        assert_eq!(t.head.seq, 2);
        assert_eq!(t.head.hash, sha256_hex(br#"{"time":"#));
        assert_eq!(
            head_before_live(&dir).expect("head"),
            Head::genesis(),
            "no rotated file"
        );
        std::fs::rename(&path, dir.join(archive_name(2))).expect("rename");
        assert_eq!(head_before_live(&dir).expect("head").seq, 2);
        let _ = std::fs::remove_dir_all(dir);
    }
}
