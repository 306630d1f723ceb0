//! Tool pinning, the rug-pull defence: the relay remembers, per route, a hash
//! of each tool's definition, and a tool whose definition changes is hidden
//! and refused until the route's owner approves the change.
//!
//! * **What is pinned.** The SHA-256 of the canonical JSON ([`canonical_json`])
//!   of the tool's `name`, `description`, `title`, `inputSchema`,
//!   `outputSchema` and `annotations` (absent and `null` members are left
//!   out) — what a model reads to decide what a tool does.
//! * **When.** Every `tools/list` answer that passes the relay is inspected
//!   ([`Inspector`]). A tool seen for the first time is pinned (trust on first
//!   use) and the pin is audited. A tool whose definition differs from its
//!   pin is removed from the answer, the change is recorded as pending and
//!   audited once (not once per request), and calls to the tool are refused
//!   ([`deny_changed_tools`]) with a JSON-RPC error saying how to approve it.
//! * **Approval.** While an agent that connected with
//!   `agent connect --accept-tool-changes` serves the route, changed
//!   definitions seen in its answers are pinned again (audited as approved by
//!   the agent). Or an administrator approves pending changes with
//!   `relay tools approve --route R [--tool T]` ([`approve`]); `relay tools
//!   list --route R` shows the pins ([`list`]).
//! * **Limits.** The relay learns definitions only from `tools/list` answers:
//!   a call to a tool that was never listed through the relay is not judged
//!   by its pin (the policy still decides it).
//!
//! Pins live in the relay's state database (`tool_pins`), so they survive
//! restarts, and are read on every inspection, so an approval by the
//! `relay tools` command (another process) takes effect at once.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::audit::{self, now_rfc3339, AuditEvent, PinHashes};
use crate::error::RelayError;
use crate::state::SharedState;
use crate::store::proof::Proof;
use crate::store::Store;
use policy::jsonrpc::{Message, MessageKind, TOOLS_CALL};
use policy::Decision;

/// Pseudo-policy id: the tool changed since it was pinned (a call refused,
/// a change recorded).
pub const PIN_CHANGED: &str = "tool-pin/changed";
/// Pseudo-policy id: the pins could not be read (fail closed).
pub const PIN_UNAVAILABLE: &str = "tool-pin/unavailable";
/// Audit policy id: a tool pinned on first sight.
pub const PINNED: &str = "tool-pin/pinned";
/// Audit policy id: a change approved by an agent with `--accept-tool-changes`.
pub const APPROVED_BY_AGENT: &str = "tool-pin/approved-by-agent";
/// Audit policy id: a change approved with `relay tools approve`.
pub const APPROVED_BY_ADMIN: &str = "tool-pin/approved-by-admin";
/// Audit policy id: a changed tool is back to its pinned definition.
pub const REVERTED: &str = "tool-pin/reverted";

/// The members of a tool definition that are pinned.
pub const PINNED_MEMBERS: [&str; 6] = [
    "name",
    "description",
    "title",
    "inputSchema",
    "outputSchema",
    "annotations",
];

/// JSON with object members sorted by key (recursively) and no whitespace:
/// the same value always gives the same text, whatever order the server
/// wrote its members in.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// A tool's pinned identity: its name, the canonical JSON of its pinned
/// members, and that JSON's hex SHA-256. `None` for a tool without a
/// string name.
pub fn fingerprint(tool: &Value) -> Option<(String, String, String)> {
    let name = tool.get("name")?.as_str()?.to_owned();
    let pinned: serde_json::Map<String, Value> = PINNED_MEMBERS
        .iter()
        .filter_map(|&k| match tool.get(k) {
            None | Some(Value::Null) => None,
            Some(v) => Some((k.to_owned(), v.clone())),
        })
        .collect();
    let definition = canonical_json(&Value::Object(pinned));
    let digest = ring::digest::digest(&ring::digest::SHA256, definition.as_bytes());
    Some((name, definition, hex::encode(digest.as_ref())))
}

/// Inspects the tools of `tools/list` answers on one route, for one request.
pub struct Inspector {
    pub state: SharedState,
    pub route: String,
    pub request_id: String,
    pub identity: String,
    pub client: String,
    /// The agent serving this answer was started with
    /// `--accept-tool-changes`: changed definitions are pinned again.
    pub accept_changes: bool,
    /// The tools to hide of the answer being filtered, as [`Inspector::prepare`]
    /// found them.
    pub prepared: Option<HashSet<String>>,
}

impl Inspector {
    /// Before an answer listing `tools` is filtered: pins the tools seen
    /// for the first time, records changes, and keeps the names of the
    /// tools to hide (changed since their pin) for [`Inspector::hidden`].
    /// If the pins cannot be read or written, every tool is hidden (fail
    /// closed).
    pub async fn prepare(&mut self, tools: &[Value]) {
        let hidden = match self.inspect(tools).await {
            Ok(hidden) => hidden,
            Err(e) => {
                tracing::error!(route = %self.route, error = %e, "tool pins unavailable; hiding every tool");
                all_names(tools)
            }
        };
        self.prepared = Some(hidden);
    }

    /// The tools of `tools` to hide, as [`Inspector::prepare`] found them;
    /// every one if it was not called (fail closed: the filter never waits
    /// on the store).
    pub fn hidden(&self, tools: &[Value]) -> HashSet<String> {
        match &self.prepared {
            Some(hidden) => hidden.clone(),
            None => {
                tracing::error!(route = %self.route, "tool pins not read before filtering; hiding every tool");
                all_names(tools)
            }
        }
    }

    async fn inspect(&self, tools: &[Value]) -> Result<HashSet<String>, RelayError> {
        let store = &self.state.store;
        let pins = store.tool_pins(&self.route).await?;
        let mut hidden = HashSet::new();
        for tool in tools {
            let Some((name, definition, hash)) = fingerprint(tool) else {
                continue;
            };
            let mut pin = pins.iter().find(|p| p.tool == name).cloned();
            if pin.is_none() {
                if store
                    .pin_tool(&self.route, &name, &hash, &definition)
                    .await?
                {
                    self.audit(&name, "allow", PINNED, None, &hash);
                    continue;
                }
                // Pinned meanwhile by another request: judge against that.
                pin = store.tool_pin(&self.route, &name).await?;
            }
            let Some(pin) = pin else {
                hidden.insert(name);
                continue;
            };
            if pin.hash == hash {
                if pin.pending.is_some()
                    && store.clear_tool_change(&self.route, &name, &hash).await?
                {
                    self.audit(&name, "allow", REVERTED, pin.pending.map(|p| p.hash), &hash);
                }
                continue;
            }
            if self.accept_changes {
                if let Some(r) = store
                    .repin_tool(&self.route, &name, &hash, &definition)
                    .await?
                {
                    self.audit(&name, "allow", APPROVED_BY_AGENT, Some(r.old_hash), &hash);
                }
                continue;
            }
            if store
                .note_tool_change(&self.route, &name, &hash, &definition)
                .await?
            {
                tracing::warn!(route = %self.route, tool = %name, old = %short(&pin.hash), new = %short(&hash), "tool definition changed since it was pinned; hiding it until the owner approves");
                self.audit(&name, "deny", PIN_CHANGED, Some(pin.hash.clone()), &hash);
            }
            hidden.insert(name);
        }
        Ok(hidden)
    }

    fn audit(&self, tool: &str, decision: &str, policy: &str, old: Option<String>, new: &str) {
        self.state.audit.record(pin_event(
            &self.route,
            tool,
            decision,
            policy,
            PinHashes {
                old_hash: old,
                new_hash: new.to_owned(),
            },
            &self.request_id,
            &self.identity,
            &self.client,
        ));
    }
}

#[allow(clippy::too_many_arguments)]
fn pin_event(
    route: &str,
    tool: &str,
    decision: &str,
    policy: &str,
    hashes: PinHashes,
    request_id: &str,
    identity: &str,
    client: &str,
) -> AuditEvent {
    AuditEvent {
        time: now_rfc3339(),
        request_id: request_id.to_owned(),
        identity: identity.to_owned(),
        client: client.to_owned(),
        route: route.to_owned(),
        http: "tool pin".into(),
        method: Some("tools/list".into()),
        kind: Some("tool-pin".into()),
        target: Some(tool.to_owned()),
        decision: decision.to_owned(),
        policy: vec![policy.to_owned()],
        complete: true,
        pin: Some(hashes),
        ..Default::default()
    }
}

/// The `tools/call`s of a body whose tool changed since it was pinned and
/// awaits approval ([`PIN_CHANGED`]), or whose pin cannot be read
/// ([`PIN_UNAVAILABLE`]): each message's index, and the rule refusing it
/// (see [`deny_changed_tools`]). Usually none, and then nothing is allocated.
pub async fn changed_tools(
    store: &Store,
    route: &str,
    messages: &[Message],
    proof: Proof,
) -> Vec<(usize, &'static str)> {
    let mut changed = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if m.kind != MessageKind::Request || m.method.as_deref() != Some(TOOLS_CALL) {
            continue;
        }
        let Some(tool) = m.target.as_deref() else {
            continue;
        };
        let refused = match store.tool_change_pending_proven(route, tool, proof).await {
            Ok(false) => continue,
            Ok(true) => PIN_CHANGED,
            Err(e) => {
                tracing::error!(route, tool, error = %e, "tool pins unavailable; refusing the call");
                PIN_UNAVAILABLE
            }
        };
        changed.push((i, refused));
    }
    changed
}

/// Refuses the calls of a body (that the policy allowed) to the tools of
/// [`changed_tools`].
pub fn deny_changed_tools(changed: &[(usize, &'static str)], decisions: &mut [Decision]) {
    for &(i, refused) in changed {
        let Some(d) = decisions.get_mut(i).filter(|d| d.allowed) else {
            continue;
        };
        *d = Decision {
            allowed: false,
            policies: vec![refused.to_owned()],
            errors: Vec::new(),
        };
    }
    // As for the policy: one refused message refuses its whole body.
    if decisions.iter().any(|d| !d.allowed) {
        for d in decisions.iter_mut().filter(|d| d.allowed) {
            *d = Decision {
                allowed: false,
                policies: vec![policy::body::BATCH_REFUSED.into()],
                errors: Vec::new(),
            };
        }
    }
}

/// The JSON-RPC error message of a call refused by its pin.
pub fn refusal_message(route: &str, tool: &str, policy: &str) -> String {
    if policy == PIN_UNAVAILABLE {
        return format!(
            "tool '{tool}' cannot be checked against its pin (the relay's state store failed); refusing the call"
        );
    }
    format!(
        "tool '{tool}' changed since it was approved on route '{route}'; until the route's owner approves the change (`agent connect --accept-tool-changes`, or `relay tools approve --route {route} --tool {tool}` on the relay) it is hidden and cannot be called"
    )
}

/// The names of `tools`.
fn all_names(tools: &[Value]) -> HashSet<String> {
    tools
        .iter()
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

pub fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// `relay tools approve --route R [--tool T]`: pending changes become the
/// pins, each approval audited in the audit log of `state_dir`. Returns what to print; an
/// error if nothing was pending.
pub async fn approve(
    store: &Store,
    state_dir: &Path,
    route: &str,
    tool: Option<&str>,
) -> Result<String, RelayError> {
    let approved = store.approve_tool_changes(route, tool).await?;
    if approved.is_empty() {
        let what = match tool {
            Some(t) => format!("tool '{t}' of route '{route}' has no pending change"),
            None => format!("route '{route}' has no pending tool changes"),
        };
        return Err(RelayError::Config(format!(
            "{what} (see `relay tools list --route {route}`)"
        )));
    }
    let events: Vec<AuditEvent> = approved
        .iter()
        .map(|r| {
            pin_event(
                route,
                &r.tool,
                "allow",
                APPROVED_BY_ADMIN,
                PinHashes {
                    old_hash: Some(r.old_hash.clone()),
                    new_hash: r.new_hash.clone(),
                },
                "",
                "relay-admin",
                "relay tools approve",
            )
        })
        .collect();
    audit::append(state_dir, &events)?;
    let mut out = String::new();
    for r in approved {
        let _ = writeln!(
            out,
            "approved tool '{}' on route '{route}': {} -> {}",
            r.tool,
            short(&r.old_hash),
            short(&r.new_hash)
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_members_at_every_depth() {
        let a = json!({"b": 1, "a": {"y": [1, {"q": null, "p": "x"}], "x": true}});
        let b: Value = serde_json::from_str(
            r#"{ "a": { "x": true, "y": [1, {"p": "x", "q": null}] }, "b": 1 }"#,
        )
        .unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":true,"y":[1,{"p":"x","q":null}]},"b":1}"#
        );
        // Strings are escaped as JSON; array order matters.
        assert_eq!(canonical_json(&json!(["\"\n", 2])), r#"["\"\n",2]"#);
        assert_ne!(
            canonical_json(&json!([1, 2])),
            canonical_json(&json!([2, 1]))
        );
    }

    #[test]
    fn the_fingerprint_covers_exactly_the_pinned_members() {
        let tool = json!({
            "name": "read_query",
            "description": "Run a SELECT",
            "inputSchema": {"type": "object", "properties": {"query": {"type": "string"}}},
            "annotations": {"readOnlyHint": true},
        });
        let (name, definition, hash) = fingerprint(&tool).unwrap();
        assert_eq!(name, "read_query");
        assert_eq!(hash.len(), 64);
        assert_eq!(
            hash,
            hex::encode(
                ring::digest::digest(&ring::digest::SHA256, definition.as_bytes()).as_ref()
            )
        );
        let same = |v: Value| fingerprint(&v).unwrap().2 == hash;
        // Member order, unpinned members and nulls do not count.
        let mut reordered = json!({"annotations": {"readOnlyHint": true}});
        for k in ["inputSchema", "description", "name"] {
            reordered[k] = tool[k].clone();
        }
        assert!(same(reordered));
        let mut extra = tool.clone();
        extra["_meta"] = json!({"x": 1});
        extra["icons"] = json!([]);
        extra["outputSchema"] = Value::Null;
        assert!(same(extra));
        // Every pinned member does.
        for (k, v) in [
            ("description", json!("Run any SQL")),
            ("title", json!("Read")),
            ("inputSchema", json!({"type": "object"})),
            ("outputSchema", json!({"type": "object"})),
            ("annotations", json!({"readOnlyHint": false})),
            ("name", json!("read_query2")),
        ] {
            let mut changed = tool.clone();
            changed[k] = v;
            assert!(!same(changed), "{k} is pinned");
        }
        assert!(fingerprint(&json!({"description": "no name"})).is_none());
        assert!(fingerprint(&json!({"name": 7})).is_none());
    }
}
