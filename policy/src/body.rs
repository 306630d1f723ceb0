//! A whole JSON-RPC body decided: each message on its own, and a body with
//! one denied message refused whole (nothing of it may reach the laptop).
//! The relay and the agent answer a refused body the same way.

use serde_json::{json, Value};

use crate::jsonrpc::{Message, MessageKind};
use crate::sql::SqlFacts;
use crate::{Caller, Decision, Engine, Request};

/// The JSON-RPC error code of a policy denial.
pub const POLICY_DENIED: i64 = -32001;

/// Pseudo-policy id of an allowed message refused because another message
/// of its batch was denied.
pub const BATCH_REFUSED: &str = "batch-refused";

impl Engine {
    /// Decides every message of a body. `facts[i]` are the SQL facts of
    /// `messages[i]` (or `None`: the engine classifies any SQL itself). If any
    /// message is denied, the allowed ones become denials by
    /// [`BATCH_REFUSED`].
    pub fn decide_body(
        &self,
        caller: Caller<'_>,
        messages: &[Message],
        facts: &[Option<SqlFacts>],
    ) -> Vec<Decision> {
        let mut decisions: Vec<Decision> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                self.decide(&Request {
                    caller,
                    message: m,
                    sql: facts.get(i).and_then(Option::as_ref),
                })
            })
            .collect();
        if decisions.iter().any(|d| !d.allowed) {
            for d in decisions.iter_mut().filter(|d| d.allowed) {
                *d = Decision {
                    allowed: false,
                    policies: vec![BATCH_REFUSED.into()],
                    errors: Vec::new(),
                };
            }
        }
        decisions
    }
}

/// What a request without JSON-RPC messages (an MCP GET stream or DELETE, a
/// plain HTTP route) is decided as: `ping`, the plumbing every session needs.
pub fn session_plumbing() -> Message {
    Message {
        kind: MessageKind::Request,
        id: None,
        method: Some("ping".to_owned()),
        target: None,
        arguments: None,
        protocol_version: None,
    }
}

/// The answer to a refused body: one JSON-RPC error per request (a single
/// object for a single message, an array for a batch), each naming the
/// policies that decided, prefixed by `who` ("" or e.g. "the laptop: ").
/// `None` when the body held only notifications and responses (answer 202).
pub fn denial(messages: &[Message], decisions: &[Decision], who: &str) -> Option<Value> {
    let errors: Vec<Value> = messages
        .iter()
        .zip(decisions)
        .filter(|(m, _)| m.kind == MessageKind::Request)
        .map(|(m, d)| {
            json!({
                "jsonrpc": "2.0",
                "id": m.id,
                "error": {
                    "code": POLICY_DENIED,
                    "message": format!("{who}{}", d.message()),
                    "data": {"policies": d.policies},
                },
            })
        })
        .collect();
    match errors.len() {
        0 => None,
        1 if messages.len() == 1 => errors.into_iter().next(),
        _ => Some(Value::Array(errors)),
    }
}
