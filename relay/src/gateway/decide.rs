//! Phase 4: the decision. [`decide`] is a pure function of the caller, the
//! route, the request's head, its body and the policy engine: no I/O, no
//! clock, no state (tested in `decide_tests.rs`). [`judge`] gathers what it
//! needs from the relay's state (the tools whose pins changed) and times it.
//!
//! Each JSON-RPC message is decided by the organisation's policy and the
//! route owner's, both of which must allow it; one refused message refuses
//! the body. A body without JSON-RPC messages (an MCP GET stream or DELETE,
//! a plain HTTP route's request) needs what every MCP session needs. A token
//! with only the read scope sends only what reads.

use std::borrow::Cow;
use std::time::Instant;

use http::request::Parts;
use http::Method;
use policy::jsonrpc::{self, Message};
use policy::route_path::{self, PathRefusal};
use policy::sql::SqlFacts;
use policy::{Caller, Decision, Engine, Request as PolicyRequest};
use protocol::RouteGrant;

use super::classify::Classified;
use super::refusal::INSUFFICIENT_SCOPE;
use super::route::Routed;
use super::Refusal;
use crate::gateway::pins;
use crate::gateway::tool_filter;
use crate::oauth::scope::Access;
use crate::state::SharedState;

/// What the decision knows of the route beyond its policy.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    pub name: &'a str,
    /// It serves MCP (not plain HTTP).
    pub mcp: bool,
    /// Its live grants (a read-only one limits what it allows).
    pub grants: &'a [RouteGrant],
    /// The messages (by index) calling a tool whose definition changed since
    /// it was pinned, and the rule refusing each ([`pins::changed_tools`]).
    pub changed_tools: &'a [(usize, &'static str)],
}

/// A request's body as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// JSON-RPC messages, with each one's SQL facts.
    JsonRpc {
        messages: &'a [Message],
        facts: &'a [Option<SqlFacts>],
    },
    /// Anything else: the body is not read before the decision.
    Opaque,
}

/// What the policy decided.
#[derive(Debug)]
pub struct Verdict {
    /// One decision per JSON-RPC message, for the audit (empty: the body has
    /// none, or was refused before the policy read it).
    pub decisions: Vec<Decision>,
    /// Whether the policy engine was consulted (for the metrics).
    pub consulted: bool,
    pub outcome: Result<Allowed, Refusal>,
}

/// A request the relay forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// The audit rule that allowed it (`None`: not judged, see
    /// `--bench-disable-policy-and-audit`).
    pub rule: Option<Cow<'static, str>>,
    /// Sending it twice changes nothing (a safe method, or JSON-RPC messages
    /// that only read): only such a request goes to another replica when its
    /// agent falls silent, as that agent may have run it.
    pub only_reads: bool,
    /// The policies that allowed it, comma-separated (every message's, each
    /// once), told to the agent for the owner's inspector
    /// ([`protocol::RELAY_RULES_HEADER`]); empty when not judged.
    pub policies: String,
}

impl Verdict {
    fn refused(refusal: Refusal, decisions: Vec<Decision>, consulted: bool) -> Verdict {
        Verdict {
            decisions,
            consulted,
            outcome: Err(refusal),
        }
    }
}

/// Decides a request of `caller` (whose token allows `access`) on `route`:
/// its method and headers (`head`), its `body`, by `engine`.
pub fn decide(
    caller: &Caller<'_>,
    access: Access,
    route: &Route<'_>,
    head: &Parts,
    body: Body<'_>,
    engine: &Engine,
) -> Verdict {
    match body {
        Body::JsonRpc { messages, facts } => {
            decide_messages(caller, access, route, head, messages, facts, engine)
        }
        Body::Opaque => decide_whole(caller, access, route, &head.method, engine),
    }
}

/// JSON-RPC messages, each on its own.
fn decide_messages(
    caller: &Caller<'_>,
    access: Access,
    route: &Route<'_>,
    head: &Parts,
    messages: &[Message],
    facts: &[Option<SqlFacts>],
    engine: &Engine,
) -> Verdict {
    // The Mcp-Method and Mcp-Name headers, when sent, say what each message
    // is (a proxy may route on them): they must not contradict it.
    let header = |name| head.headers.get(name).and_then(|v| v.to_str().ok());
    let method_header = header(jsonrpc::MCP_METHOD_HEADER);
    let name_header = header(jsonrpc::MCP_NAME_HEADER);
    if method_header.is_some() || name_header.is_some() {
        for m in messages {
            if let Err(mismatch) = jsonrpc::check_headers(method_header, name_header, m) {
                let refusal = Refusal::HeaderMismatch {
                    mismatch: Box::new(mismatch),
                    id: m.id.clone(),
                };
                return Verdict::refused(refusal, Vec::new(), false);
            }
        }
    }
    let mut decisions = engine.decide_body(*caller, messages, facts);
    // A call to a tool that changed since it was pinned waits for the owner.
    pins::deny_changed_tools(route.changed_tools, &mut decisions);
    if decisions.iter().any(|d| !d.allowed) {
        let visible = |tool: &str| engine.tool_visible(caller, tool);
        let errors = tool_filter::refusals(messages, &decisions, route.name, &visible);
        return Verdict::refused(Refusal::Policy(errors), decisions, true);
    }
    // A token with only the read scope sends only what reads; the client is
    // told which scope to ask for (step-up).
    if access == Access::Read {
        let writing: Vec<usize> = messages
            .iter()
            .zip(facts)
            .enumerate()
            .filter(|(_, (m, f))| !policy::reading::reads(m, f.as_ref()))
            .map(|(i, _)| i)
            .collect();
        if let Some(&first) = writing.first() {
            for &i in &writing {
                decisions[i] = Decision {
                    allowed: false,
                    policies: vec![INSUFFICIENT_SCOPE.to_owned()],
                    errors: Vec::new(),
                };
            }
            let first = &messages[first];
            let refusal = Refusal::InsufficientScope {
                id: first.id.clone(),
                what: describe(first),
            };
            return Verdict::refused(refusal, decisions, true);
        }
    }
    let only_reads = messages
        .iter()
        .zip(facts)
        .all(|(m, f)| policy::reading::reads(m, f.as_ref()));
    let policies = policies_of(&decisions);
    Verdict {
        decisions,
        consulted: true,
        outcome: Ok(Allowed {
            rule: Some(Cow::Borrowed("policy")),
            only_reads,
            policies,
        }),
    }
}

/// A request without JSON-RPC messages to judge: the caller needs what
/// every MCP session needs.
fn decide_whole(
    caller: &Caller<'_>,
    access: Access,
    route: &Route<'_>,
    method: &Method,
    engine: &Engine,
) -> Verdict {
    if route.mcp && method == Method::POST {
        // An MCP route's POSTs are JSON-RPC: anything else would reach the
        // local server without the policy having read it.
        return Verdict::refused(Refusal::NotJson, Vec::new(), false);
    }
    let decision = engine.decide(&PolicyRequest {
        caller: *caller,
        message: &policy::body::session_plumbing(),
        sql: None,
    });
    if !decision.allowed {
        return Verdict::refused(Refusal::Forbidden(decision), Vec::new(), true);
    }
    // A read-only token (or grant) may open and end MCP sessions, and only
    // read a plain HTTP route.
    let safe = is_safe(method);
    let reading = route.mcp || safe;
    if !reading && rests_on_read_only_grants(&decision, route.grants) {
        let refusal = Refusal::Path(PathRefusal::ReadOnly(method.to_string()));
        return Verdict::refused(refusal, Vec::new(), true);
    }
    if access == Access::Read && !reading {
        let refusal = Refusal::InsufficientScope {
            id: None,
            what: format!("{method} on a plain HTTP route"),
        };
        return Verdict::refused(refusal, Vec::new(), true);
    }
    Verdict {
        decisions: Vec::new(),
        consulted: true,
        outcome: Ok(Allowed {
            rule: Some(Cow::Owned(decision.policies.join(","))),
            only_reads: safe,
            policies: decision.policies.join(","),
        }),
    }
}

/// The policies of `decisions`, each once, in order, comma-separated.
fn policies_of(decisions: &[Decision]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for p in decisions.iter().flat_map(|d| &d.policies) {
        if !seen.contains(&p.as_str()) {
            seen.push(p);
        }
    }
    seen.join(",")
}

/// A method that changes nothing.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether an allowed decision rests only on read-only `grants`.
fn rests_on_read_only_grants(decision: &Decision, grants: &[RouteGrant]) -> bool {
    let read_only: Vec<&str> = grants
        .iter()
        .filter(|g| g.read_only)
        .map(|g| g.id.as_str())
        .collect();
    !read_only.is_empty() && route_path::rests_on_read_only_grants(decision, &read_only)
}

/// What a writing message is, for the refusal's text.
fn describe(m: &Message) -> String {
    let method = m.method.as_deref().unwrap_or("a response");
    match &m.target {
        Some(t) => format!("{method} {t}"),
        None => method.to_owned(),
    }
}

/// The decision on a request, with what [`decide`] needs from the relay's
/// state: the tools whose pins changed. Not judged with
/// `--bench-disable-policy-and-audit`.
pub async fn judge(
    state: &SharedState,
    caller: &Caller<'_>,
    access: Access,
    routed: &Routed,
    head: &Parts,
    body: &Classified,
) -> Verdict {
    if state.config.bench_disable_policy_and_audit {
        return Verdict {
            decisions: Vec::new(),
            consulted: false,
            outcome: Ok(Allowed {
                rule: None,
                only_reads: is_safe(&head.method),
                policies: String::new(),
            }),
        };
    }
    let changed_tools = match body {
        Classified::Messages(m) => {
            pins::changed_tools(&state.store, caller.route, &m.messages, routed.proof).await
        }
        Classified::Opaque(_) => Vec::new(),
    };
    let route = Route {
        name: caller.route,
        mcp: routed.mcp(),
        grants: &routed.grants,
        changed_tools: &changed_tools,
    };
    let deciding = Instant::now();
    let verdict = decide(caller, access, &route, head, body.view(), &routed.engine);
    if verdict.consulted {
        state.metrics.policy_evaluated(deciding.elapsed());
    }
    verdict
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
