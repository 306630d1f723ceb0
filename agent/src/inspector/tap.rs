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

#[derive(Debug, Default)]
struct Seen {
    request: Option<KeptBody>,
    messages: Vec<MessageInfo>,
    status: Option<u16>,
    response: Vec<u8>,
    response_size: u64,
    first_byte: Option<Instant>,
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

    /// The request body the gate read whole.
    pub fn request(&self, bytes: &[u8]) {
        let messages = jsonrpc::classify_body(bytes)
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        let sql = m.sql_argument();
                        MessageInfo {
                            kind: m.kind.as_str().to_owned(),
                            id: m.id.clone(),
                            method: m.method.clone(),
                            target: m.target.clone(),
                            sql: sql.map(|s| cut(s.as_bytes(), self.limit).0),
                            sql_facts: sql.map(sql::classify),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (text, truncated) = cut(bytes, self.limit);
        let mut seen = self.seen();
        seen.request = Some(KeptBody {
            text,
            size: bytes.len() as u64,
            truncated,
        });
        seen.messages = messages;
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
    pub status: Option<u16>,
    pub response: KeptBody,
    pub first_byte: Option<Instant>,
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
    }
}
