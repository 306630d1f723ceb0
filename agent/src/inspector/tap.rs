//! What the inspector sees of one exchange while it happens: the request
//! body the gate read (with its JSON-RPC messages and SQL facts), and the
//! answer's status and first bytes as they go back to the relay. Created only
//! when `--inspect` is on; everything kept is cut at the body limit.

use std::sync::Mutex;
use std::time::Instant;

use policy::jsonrpc;
use policy::sql::{self, SqlFacts};
use serde::Serialize;

/// A body as kept: the first bytes (as text, lossily) and its full size.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KeptBody {
    pub text: String,
    /// The body's whole size in bytes.
    pub size: u64,
    /// Whether `text` is only the first part of it.
    pub truncated: bool,
}

/// One JSON-RPC message of the request, as the policy saw it.
#[derive(Debug, Clone, Serialize)]
pub struct MessageInfo {
    pub kind: String,
    /// The JSON-RPC id (none for a notification).
    pub id: Option<serde_json::Value>,
    pub method: Option<String>,
    /// The tool, prompt or resource it acts on.
    pub target: Option<String>,
    /// The SQL it carries (`arguments.query`), cut at the body limit.
    pub sql: Option<String>,
    /// What the policy crate's SQL reading says of it.
    pub sql_facts: Option<SqlFacts>,
}

/// The most messages of one request kept.
pub const MAX_MESSAGES: usize = 16;
/// The most tables, functions or statements kept per message.
const MAX_NAMES: usize = 16;
/// The longest name (method, tool, table) or id kept, in bytes.
const MAX_NAME: usize = 256;

/// What a whole request asks, all its messages read.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// Some message is a `tools/call`.
    pub tool_calls: bool,
    /// Some message carries SQL that is not read-only (or does not parse).
    pub writes: bool,
    /// The id of every request (null for none), for a denial's answers.
    pub request_ids: Vec<serde_json::Value>,
}

#[derive(Debug, Default)]
struct Seen {
    request: Option<KeptBody>,
    messages: Vec<MessageInfo>,
    messages_total: usize,
    shape: Shape,
    status: Option<u16>,
    response: Vec<u8>,
    response_size: u64,
    first_byte: Option<Instant>,
    /// The owner's word (`--approve`), told to the relay with the answer.
    approval: Option<String>,
}

/// The capture of one exchange (shared by the gate and the upstream).
#[derive(Debug)]
pub struct Tap {
    limit: usize,
    seen: Mutex<Seen>,
}

impl Tap {
    /// A capture keeping at most `limit` bytes of each body.
    pub fn new(limit: usize) -> Tap {
        Tap {
            limit,
            seen: Mutex::new(Seen::default()),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the owner's word on the exchange (`--approve`), in the form
    /// of [`protocol::APPROVAL_HEADER`].
    pub fn set_approval(&self, word: String) {
        self.seen().approval = Some(word);
    }

    /// The owner's word on the exchange, if it waited for one.
    pub fn approval(&self) -> Option<String> {
        self.seen().approval.clone()
    }

    /// The request body the gate read whole. Of its messages, those that fit
    /// in the body limit are kept (at least one, at most [`MAX_MESSAGES`],
    /// strings and lists cut); what `--approve` needs is read from all.
    pub fn request(&self, bytes: &[u8]) {
        let all = jsonrpc::classify_body(bytes).unwrap_or_default();
        let mut shape = Shape::default();
        let mut messages = Vec::new();
        let mut used = 0usize;
        for m in &all {
            let sql = m.sql_argument();
            let facts = sql.map(sql::classify);
            shape.tool_calls |= m.method.as_deref() == Some("tools/call");
            shape.writes |= facts.as_ref().is_some_and(|f| !f.read_only);
            if m.kind == jsonrpc::MessageKind::Request {
                shape
                    .request_ids
                    .push(m.id.clone().unwrap_or(serde_json::Value::Null));
            }
            if messages.len() >= MAX_MESSAGES || (used >= self.limit && !messages.is_empty()) {
                continue;
            }
            let info = MessageInfo {
                kind: m.kind.as_str().to_owned(),
                id: m.id.clone().filter(|id| id.to_string().len() <= MAX_NAME),
                method: m.method.as_deref().map(short),
                target: m.target.as_deref().map(short),
                sql: sql.map(|s| cut(s.as_bytes(), self.limit.saturating_sub(used)).0),
                sql_facts: facts.map(|mut f| {
                    for list in [&mut f.tables, &mut f.functions] {
                        list.truncate(MAX_NAMES);
                        for name in list.iter_mut() {
                            *name = short(name);
                        }
                    }
                    f.statements.truncate(MAX_NAMES);
                    f
                }),
            };
            used += serde_json::to_string(&info).map_or(0, |j| j.len());
            messages.push(info);
        }
        let (text, truncated) = cut(bytes, self.limit);
        let mut seen = self.seen();
        seen.request = Some(KeptBody {
            text,
            size: bytes.len() as u64,
            truncated,
        });
        seen.messages = messages;
        seen.messages_total = all.len();
        seen.shape = shape;
    }

    /// What the whole request asks (for `--approve`).
    pub fn shape(&self) -> Shape {
        self.seen().shape.clone()
    }

    /// The answer's status (the agent's own or the local server's).
    pub fn status(&self, status: u16) {
        let mut seen = self.seen();
        seen.status = Some(status);
        seen.first_byte.get_or_insert_with(Instant::now);
    }

    /// A piece of the answer's body, as it goes back.
    pub fn response_chunk(&self, data: &[u8]) {
        let mut seen = self.seen();
        seen.response_size += data.len() as u64;
        let room = self.limit.saturating_sub(seen.response.len());
        let take = room.min(data.len());
        seen.response.extend_from_slice(&data[..take]);
    }

    /// The request's JSON-RPC messages, as seen so far.
    pub fn messages(&self) -> Vec<MessageInfo> {
        self.seen().messages.clone()
    }

    /// What was seen so far (the exchange goes on).
    pub fn snapshot(&self) -> Captured {
        let seen = self.seen();
        Captured {
            request: seen.request.clone(),
            messages: seen.messages.clone(),
            messages_total: seen.messages_total,
            status: seen.status,
            response: KeptBody {
                text: String::from_utf8_lossy(&seen.response).into_owned(),
                size: seen.response_size,
                truncated: seen.response_size > seen.response.len() as u64,
            },
            first_byte: seen.first_byte,
        }
    }

    /// What was seen, once the exchange is over.
    pub fn finish(&self) -> Captured {
        let mut seen = self.seen();
        let response = std::mem::take(&mut seen.response);
        Captured {
            request: seen.request.take(),
            messages: std::mem::take(&mut seen.messages),
            messages_total: seen.messages_total,
            status: seen.status,
            response: KeptBody {
                text: String::from_utf8_lossy(&response).into_owned(),
                size: seen.response_size,
                truncated: seen.response_size > response.len() as u64,
            },
            first_byte: seen.first_byte,
        }
    }
}

/// What a [`Tap`] saw.
#[derive(Debug)]
pub struct Captured {
    pub request: Option<KeptBody>,
    pub messages: Vec<MessageInfo>,
    /// How many messages the request had (more than `messages` when cut).
    pub messages_total: usize,
    pub status: Option<u16>,
    pub response: KeptBody,
    pub first_byte: Option<Instant>,
}

/// `s`, cut to [`MAX_NAME`] bytes (on a character boundary).
fn short(s: &str) -> String {
    if s.len() <= MAX_NAME {
        return s.to_owned();
    }
    let mut end = MAX_NAME;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The first `limit` bytes of `bytes` as text (lossily), and whether that
/// is not all of it.
fn cut(bytes: &[u8], limit: usize) -> (String, bool) {
    let take = bytes.len().min(limit);
    (
        String::from_utf8_lossy(&bytes[..take]).into_owned(),
        take < bytes.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sql_facts_and_cuts_bodies() {
        let tap = Tap::new(64);
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_query","arguments":{"query":"DELETE FROM customers WHERE id = 1"}}}"#;
        tap.request(body);
        tap.status(200);
        tap.response_chunk(&[b'x'; 50]);
        tap.response_chunk(&[b'y'; 50]);
        let c = tap.finish();
        let req = c.request.expect("request");
        assert_eq!(req.size, body.len() as u64);
        assert!(req.truncated);
        assert_eq!(req.text.len(), 64);
        assert_eq!(c.messages.len(), 1);
        assert_eq!(c.messages[0].target.as_deref(), Some("write_query"));
        let facts = c.messages[0].sql_facts.as_ref().expect("facts");
        assert!(!facts.read_only);
        assert_eq!(facts.tables, vec!["customers".to_owned()]);
        assert_eq!(c.status, Some(200));
        assert_eq!(c.response.size, 100);
        assert_eq!(c.response.text.len(), 64);
        assert!(c.response.truncated);
        let shape = tap.shape();
        assert!(shape.tool_calls && shape.writes);
        assert_eq!(shape.request_ids, vec![serde_json::json!(1)]);
    }

    #[test]
    fn a_big_batch_is_kept_within_the_limit_but_read_whole() {
        let limit = 4096;
        let tap = Tap::new(limit);
        let call = |i: usize, sql: &str| {
            serde_json::json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                "params": {"name": "read_query", "arguments": {"query": sql}}})
        };
        // 100 tables of 300-character names.
        let tables: Vec<String> = (0..100)
            .map(|i| format!("{}{i}", "t".repeat(300)))
            .collect();
        let long = format!("SELECT 1 FROM {}", tables.join(", "));
        let mut batch: Vec<_> = (0..100).map(|i| call(i, &long)).collect();
        batch.push(call(100, "DELETE FROM orders"));
        let body = serde_json::to_vec(&batch).expect("json");
        tap.request(&body);
        let shape = tap.shape();
        assert!(shape.writes, "the write at the end is seen");
        assert_eq!(shape.request_ids.len(), 101);
        let c = tap.finish();
        assert_eq!(c.messages_total, 101);
        assert!(!c.messages.is_empty() && c.messages.len() <= MAX_MESSAGES);
        let kept: usize = c
            .messages
            .iter()
            .map(|m| serde_json::to_string(m).expect("json").len())
            .sum();
        // The limit, plus at most one message over it (its SQL cut at the
        // limit, its names at MAX_NAMES x MAX_NAME each list).
        let one_message = limit + 2 * MAX_NAMES * (MAX_NAME + 3) + 1024;
        assert!(kept <= limit + one_message, "{kept}");
        let facts = c.messages[0].sql_facts.as_ref().expect("facts");
        assert!(facts.parsed, "{facts:?}");
        assert_eq!(facts.tables.len(), MAX_NAMES);
        assert!(
            facts.tables.iter().all(|t| t.len() <= MAX_NAME + 3),
            "{facts:?}"
        );
    }
}
