//! Which MCP messages only read: what a token with the relay's read-only
//! OAuth scope (`mcp:read`) may send.
//!
//! The rule is the one `--read-only` and a read-only grant (`agent share
//! --read-only`) apply, stated once more in Rust so that the relay can tell
//! *reading* from *writing* independently of who the caller is:
//!
//! * the session plumbing (`initialize`, `ping`, notifications, responses to
//!   server requests), the three lists, `resources/read` (and subscribe)
//!   and `prompts/get` read;
//! * a `tools/call` reads only if the tool is a known read tool
//!   ([`READ_TOOLS`]), its SQL (if any) parsed and only reads, `read_query`
//!   carries SQL, and no SQL calls a file function ([`FILE_FUNCTIONS`]);
//! * any other method (`completion/complete`, `logging/setLevel`, `tasks/…`,
//!   methods of later revisions) is not known to read, so it does not. A
//!   read-only grant does not permit these either.
//!
//! A test checks that this agrees with the `--read-only` flags' Cedar
//! policies on every action.

use crate::engine::{Action, FILE_FUNCTIONS, READ_TOOLS};
use crate::jsonrpc::Message;
use crate::sql::{self, SqlFacts};

/// Whether `message` only reads. `facts` are its SQL's (of
/// [`Message::sql_argument`]); when `None` and the message carries SQL, it
/// is classified here, so the SQL judged is always the SQL sent.
pub fn reads(message: &Message, facts: Option<&SqlFacts>) -> bool {
    match Action::of(message) {
        Action::Initialize
        | Action::Ping
        | Action::Notify
        | Action::Respond
        | Action::ListTools
        | Action::ListResources
        | Action::ListPrompts
        | Action::ReadResource
        | Action::GetPrompt => true,
        Action::OtherMethod => false,
        Action::CallTool => {
            let Some(tool) = message.target.as_deref() else {
                return false;
            };
            if !READ_TOOLS.contains(&tool) {
                return false;
            }
            let classified;
            let facts = match (facts, message.sql_argument()) {
                (Some(f), Some(_)) => Some(f),
                (None, Some(text)) => {
                    classified = sql::classify(text);
                    Some(&classified)
                }
                (_, None) => None,
            };
            match facts {
                None => tool != "read_query",
                Some(f) => {
                    f.parsed
                        && f.read_only
                        && !f
                            .functions
                            .iter()
                            .any(|name| FILE_FUNCTIONS.contains(&name.as_str()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use serde_json::{json, Value};

    use super::*;
    use crate::jsonrpc::classify_body;
    use crate::{Caller, Engine, Policy, Request};

    fn message(value: Value) -> Message {
        let mut messages = classify_body(value.to_string().as_bytes()).expect("valid message");
        messages.remove(0)
    }

    fn call(tool: &str, arguments: Value) -> Message {
        message(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}))
    }

    fn sql_call(tool: &str, sql: &str) -> Message {
        call(tool, json!({"query": sql}))
    }

    fn request(method: &str) -> Message {
        message(json!({"jsonrpc": "2.0", "id": 1, "method": method}))
    }

    /// Messages of every action, reading and writing.
    fn samples() -> Vec<(Message, bool)> {
        vec![
            (request("initialize"), true),
            (request("server/discover"), true),
            (request("ping"), true),
            (
                message(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
                true,
            ),
            (
                message(json!({"jsonrpc": "2.0", "id": 7, "result": {}})),
                true,
            ),
            (request("tools/list"), true),
            (request("resources/list"), true),
            (request("prompts/list"), true),
            (
                message(
                    json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read",
                    "params": {"uri": "memo://insights"}}),
                ),
                true,
            ),
            (
                message(json!({"jsonrpc": "2.0", "id": 1, "method": "prompts/get",
                    "params": {"name": "p"}})),
                true,
            ),
            (sql_call("read_query", "SELECT * FROM users"), true),
            (call("list_tables", json!({})), true),
            (call("describe_table", json!({"table_name": "users"})), true),
            // Writing SQL, whatever the tool is called.
            (sql_call("read_query", "DELETE FROM users"), false),
            (
                sql_call("read_query", "WITH x AS (SELECT 1) DELETE FROM users"),
                false,
            ),
            (sql_call("list_tables", "DROP TABLE users"), false),
            // SQL that does not parse cannot be judged.
            (sql_call("read_query", "SELEC nonsense ((("), false),
            // read_query without SQL: nothing to judge.
            (call("read_query", json!({})), false),
            (call("read_query", json!({"query": 42})), false),
            // Functions that touch files or load code.
            (
                sql_call("read_query", "SELECT load_extension('/tmp/x.so')"),
                false,
            ),
            (
                sql_call("read_query", "SELECT writefile('/tmp/x', 'y')"),
                false,
            ),
            // Known writers, even with reading SQL, and unknown tools.
            (sql_call("write_query", "SELECT 1"), false),
            (
                call("create_table", json!({"query": "CREATE TABLE t (a)"})),
                false,
            ),
            (call("append_insight", json!({"insight": "x"})), false),
            (call("send_email", json!({"to": "x"})), false),
            (sql_call("send_email", "SELECT 1"), false),
        ]
    }

    #[test]
    fn reading_and_writing_messages_are_told_apart() {
        for (m, expected) in samples() {
            assert_eq!(reads(&m, None), expected, "{m:?}");
            let facts = m.sql_argument().map(sql::classify);
            assert_eq!(reads(&m, facts.as_ref()), expected, "{m:?} with facts");
        }
        // Methods not known to read are not.
        assert!(!reads(&request("completion/complete"), None));
        assert!(!reads(&request("tasks/cancel"), None));
    }

    /// The Rust rule and the `--read-only` flags' Cedar policies agree on
    /// every tool call; they differ only on other methods, which `--read-only`
    /// leaves to the owner's permits and `mcp:read` refuses.
    #[test]
    fn reading_agrees_with_the_read_only_flags() {
        let policy = Policy::from_flags(&[], None, true).expect("flags compile");
        let engine = Engine::new(policy, None);
        let owner = "alice@example.com";
        for (m, expected) in samples() {
            let facts = m.sql_argument().map(sql::classify);
            let decision = engine.decide(&Request {
                caller: Caller {
                    email: owner,
                    groups: &[],
                    client_id: "c",
                    client_name: None,
                    route: "db",
                    route_owner: owner,
                    time: SystemTime::now(),
                },
                message: &m,
                sql: facts.as_ref(),
            });
            assert_eq!(decision.allowed, expected, "{m:?}: {decision:?}");
        }
    }
}
