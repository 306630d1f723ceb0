//! The relay's decision, without a relay: a caller, a route, a request head,
//! a body and an engine in; what is allowed or refused (and the audit's
//! decision on each message) out.

use std::time::SystemTime;

use policy::body::{BATCH_REFUSED, POLICY_DENIED};
use policy::jsonrpc::classify_body;
use policy::{Grant, Grantee, Policy};
use serde_json::{json, Value};

use super::*;
use crate::gateway::pins::{PIN_CHANGED, PIN_UNAVAILABLE};

const OWNER: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

fn caller(email: &str) -> Caller<'_> {
    Caller {
        email,
        groups: &[],
        client_id: "test-client",
        client_name: None,
        route: "db",
        route_owner: OWNER,
        time: SystemTime::now(),
    }
}

/// The route owner's flags (`agent connect --allow … --tools … --read-only`).
fn engine(allow: &[&str], tools: Option<&[&str]>, read_only: bool) -> Engine {
    let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
    let tools: Option<Vec<String>> = tools.map(|t| t.iter().map(|s| s.to_string()).collect());
    let policy = Policy::from_flags(&allow, tools.as_deref(), read_only).expect("flags");
    Engine::new(policy, None)
}

/// The owner's default policy with `bob` granted the route (`agent share`).
fn shared_with_bob(read_only: bool) -> (Engine, Vec<RouteGrant>) {
    let grant = Grant {
        id: "g1".into(),
        grantee: Grantee::parse(BOB).expect("grantee"),
        tools: None,
        resources: Vec::new(),
        prompts: Vec::new(),
        read_only,
        expires_at: None,
    };
    let owner = Policy::from_flags(&[], None, false).expect("flags");
    let policy = owner.with_grants(&[grant]).expect("grants");
    let wire = RouteGrant {
        id: "g1".into(),
        with: BOB.into(),
        tools: None,
        read_only,
        expires_at: None,
        resources: Vec::new(),
        prompts: Vec::new(),
    };
    (Engine::new(policy, None), vec![wire])
}

fn head(method: &str, headers: &[(&str, &str)]) -> Parts {
    let mut req = http::Request::builder().method(method).uri("/mcp/db");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(()).expect("request").into_parts().0
}

fn post() -> Parts {
    head("POST", &[("content-type", "application/json")])
}

const MCP: Route<'static> = Route {
    name: "db",
    mcp: true,
    grants: &[],
    changed_tools: &[],
};

const PLAIN: Route<'static> = Route {
    name: "db",
    mcp: false,
    grants: &[],
    changed_tools: &[],
};

fn call(id: i64, tool: &str, query: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": {"query": query}}})
}

/// Decides `body` (JSON-RPC) as [`judge`] would, without the relay.
fn decide_json(
    who: &str,
    access: Access,
    route: &Route<'_>,
    head: &Parts,
    body: &Value,
    engine: &Engine,
) -> Verdict {
    let messages = classify_body(body.to_string().as_bytes()).expect("JSON-RPC");
    let facts: Vec<Option<SqlFacts>> = messages
        .iter()
        .map(|m| m.sql_argument().map(policy::sql::classify))
        .collect();
    let body = Body::JsonRpc {
        messages: &messages,
        facts: &facts,
    };
    decide(&caller(who), access, route, head, body, engine)
}

fn allowed(v: &Verdict) -> &Allowed {
    match &v.outcome {
        Ok(a) => a,
        Err(r) => panic!("expected the request allowed, got {r:?}"),
    }
}

fn refusal(v: &Verdict) -> &Refusal {
    match &v.outcome {
        Err(r) => r,
        Ok(a) => panic!("expected a refusal, got {a:?}"),
    }
}

/// The JSON-RPC errors of a policy refusal.
fn policy_errors(v: &Verdict) -> &Value {
    match refusal(v) {
        Refusal::Policy(Some(errors)) => errors,
        other => panic!("expected a policy refusal with errors, got {other:?}"),
    }
}

fn policies(v: &Verdict) -> Vec<Vec<&str>> {
    v.decisions
        .iter()
        .map(|d| d.policies.iter().map(String::as_str).collect())
        .collect()
}

#[test]
fn the_owner_passes_and_a_stranger_does_not_see_the_tool() {
    let e = engine(&[], None, false);
    let body = call(7, "read_query", "SELECT 1");
    let v = decide_json(OWNER, Access::Full, &MCP, &post(), &body, &e);
    assert_eq!(allowed(&v).rule.as_deref(), Some("policy"));
    assert!(allowed(&v).only_reads);
    assert!(v.consulted);
    assert_eq!(policies(&v), [["owner"]]);
    // What the agent is told allowed it (the owner's inspector shows it).
    assert_eq!(allowed(&v).policies, "owner");

    // A stranger is told the tool does not exist (it is not listed to them
    // either), and the audit says why.
    let v = decide_json(BOB, Access::Full, &MCP, &post(), &body, &e);
    let errors = policy_errors(&v);
    assert_eq!(errors["id"], 7);
    assert_eq!(errors["error"]["message"], "Unknown tool: read_query");
    assert!(!v.decisions[0].allowed);
    assert_eq!(refusal(&v).rule().as_deref(), Some("policy"));
}

#[test]
fn a_tool_allow_list_refuses_other_tools_to_everybody() {
    let e = engine(&[BOB], Some(&["read_query"]), false);
    let v = decide_json(
        BOB,
        Access::Full,
        &MCP,
        &post(),
        &call(1, "read_query", "SELECT 1"),
        &e,
    );
    allowed(&v);
    for who in [BOB, OWNER] {
        let v = decide_json(
            who,
            Access::Full,
            &MCP,
            &post(),
            &call(2, "write_query", "DELETE FROM t"),
            &e,
        );
        let errors = policy_errors(&v);
        assert_eq!(errors["id"], 2);
        assert_eq!(errors["error"]["message"], "Unknown tool: write_query");
        assert_eq!(policies(&v), [["tools"]], "{who}");
    }
}

#[test]
fn read_only_sql_is_judged_by_its_facts_not_the_tool_name() {
    let e = engine(&[BOB], None, true);
    let v = decide_json(
        BOB,
        Access::Full,
        &MCP,
        &post(),
        &call(1, "read_query", "SELECT * FROM t"),
        &e,
    );
    assert!(allowed(&v).only_reads);
    let v = decide_json(
        BOB,
        Access::Full,
        &MCP,
        &post(),
        &call(3, "read_query", "WITH x AS (SELECT 1) DELETE FROM t"),
        &e,
    );
    let errors = policy_errors(&v);
    assert_eq!(errors["id"], 3);
    assert_eq!(errors["error"]["code"], POLICY_DENIED);
    assert!(
        v.decisions[0].policies.iter().any(|p| p == "read-only-sql"),
        "{:?}",
        v.decisions
    );
}

#[test]
fn one_refused_message_refuses_its_whole_batch() {
    let e = engine(&[BOB], Some(&["read_query"]), false);
    let batch = json!([
        call(1, "read_query", "SELECT 1"),
        call(2, "write_query", "DELETE FROM t"),
        {"jsonrpc": "2.0", "method": "notifications/progress"}
    ]);
    let v = decide_json(BOB, Access::Full, &MCP, &post(), &batch, &e);
    assert_eq!(policies(&v), [[BATCH_REFUSED], ["tools"], [BATCH_REFUSED]]);
    // One error per request; the notification gets none.
    let errors = policy_errors(&v).as_array().expect("an array");
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["id"], 1);
    assert_eq!(errors[0]["error"]["code"], POLICY_DENIED);
    assert_eq!(errors[1]["id"], 2);
}

#[test]
fn refused_notifications_alone_are_answered_202_without_errors() {
    let e = engine(&[], None, false);
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let v = decide_json(BOB, Access::Full, &MCP, &post(), &note, &e);
    assert!(matches!(refusal(&v), Refusal::Policy(None)));
    assert_eq!(v.decisions.len(), 1);
    let v = decide_json(OWNER, Access::Full, &MCP, &post(), &note, &e);
    assert!(allowed(&v).only_reads);
}

#[test]
fn unknown_methods_are_decided_and_never_count_as_reading() {
    let e = engine(&[BOB], None, false);
    let odd = json!({"jsonrpc": "2.0", "id": 5, "method": "vendor/frobnicate"});
    // The policy lets bob do anything …
    let v = decide_json(BOB, Access::Full, &MCP, &post(), &odd, &e);
    assert!(!allowed(&v).only_reads, "not sent twice");
    // … but a read-only token may not send what is not known to read.
    let v = decide_json(BOB, Access::Read, &MCP, &post(), &odd, &e);
    match refusal(&v) {
        Refusal::InsufficientScope { id, what } => {
            assert_eq!(id.as_ref(), Some(&json!(5)));
            assert_eq!(what, "vendor/frobnicate");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_read_scope_token_reads_and_is_told_to_step_up_to_write() {
    let e = engine(&[BOB], None, false);
    let reads = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        call(2, "read_query", "SELECT 1")
    ]);
    let v = decide_json(BOB, Access::Read, &MCP, &post(), &reads, &e);
    assert!(allowed(&v).only_reads);

    let mixed = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        call(2, "write_query", "INSERT INTO t VALUES (1)"),
        call(3, "read_query", "DELETE FROM t")
    ]);
    let v = decide_json(BOB, Access::Read, &MCP, &post(), &mixed, &e);
    match refusal(&v) {
        Refusal::InsufficientScope { id, what } => {
            assert_eq!(id.as_ref(), Some(&json!(2)), "the first writing request");
            assert_eq!(what, "tools/call write_query");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(refusal(&v).rule().as_deref(), Some(INSUFFICIENT_SCOPE));
    // The audit shows which messages wrote.
    assert!(v.decisions[0].allowed);
    assert_eq!(v.decisions[1].policies, [INSUFFICIENT_SCOPE]);
    assert_eq!(v.decisions[2].policies, [INSUFFICIENT_SCOPE]);
    // The same body with a full token passes.
    let v = decide_json(BOB, Access::Full, &MCP, &post(), &mixed, &e);
    assert!(!allowed(&v).only_reads);
}

#[test]
fn mcp_headers_that_contradict_the_body_are_refused_before_the_policy() {
    let e = engine(&[], None, false);
    let h = head(
        "POST",
        &[
            ("content-type", "application/json"),
            ("mcp-method", "tools/list"),
        ],
    );
    let v = decide_json(
        OWNER,
        Access::Full,
        &MCP,
        &h,
        &call(9, "read_query", "SELECT 1"),
        &e,
    );
    match refusal(&v) {
        Refusal::HeaderMismatch { id, .. } => assert_eq!(id.as_ref(), Some(&json!(9))),
        other => panic!("{other:?}"),
    }
    assert!(!v.consulted && v.decisions.is_empty());
    // Headers that agree pass.
    let h = head(
        "POST",
        &[
            ("content-type", "application/json"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "read_query"),
        ],
    );
    let v = decide_json(
        OWNER,
        Access::Full,
        &MCP,
        &h,
        &call(9, "read_query", "SELECT 1"),
        &e,
    );
    allowed(&v);
}

#[test]
fn a_call_to_a_tool_changed_since_its_pin_waits_for_the_owner() {
    let e = engine(&[], None, false);
    for rule in [PIN_CHANGED, PIN_UNAVAILABLE] {
        let changed = [(1, rule)];
        let route = Route {
            changed_tools: &changed,
            ..MCP
        };
        let batch = json!([
            call(1, "read_query", "SELECT 1"),
            call(2, "write_query", "DELETE FROM t")
        ]);
        let v = decide_json(OWNER, Access::Full, &route, &post(), &batch, &e);
        assert_eq!(policies(&v), [[BATCH_REFUSED], [rule]]);
        let errors = policy_errors(&v);
        let message = errors[1]["error"]["message"].as_str().expect("message");
        assert!(message.contains("write_query"), "{message}");
    }
}

#[test]
fn an_mcp_post_that_is_not_json_is_refused_unread() {
    let e = engine(&[], None, false);
    let h = head("POST", &[("content-type", "text/plain")]);
    let v = decide(&caller(OWNER), Access::Full, &MCP, &h, Body::Opaque, &e);
    assert!(matches!(refusal(&v), Refusal::NotJson));
    assert!(!v.consulted);
}

#[test]
fn requests_without_messages_need_what_every_session_needs() {
    let e = engine(&[], None, false);
    for method in ["GET", "DELETE"] {
        let v = decide(
            &caller(OWNER),
            Access::Read,
            &MCP,
            &head(method, &[]),
            Body::Opaque,
            &e,
        );
        assert_eq!(allowed(&v).rule.as_deref(), Some("owner"));
        assert_eq!(allowed(&v).policies, "owner");
        assert_eq!(allowed(&v).only_reads, method == "GET");
        assert!(v.decisions.is_empty());
    }
    let v = decide(
        &caller(BOB),
        Access::Full,
        &MCP,
        &head("GET", &[]),
        Body::Opaque,
        &e,
    );
    match refusal(&v) {
        Refusal::Forbidden(d) => assert_eq!(d.policies, ["default-deny"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(refusal(&v).rule().as_deref(), Some("default-deny"));
}

#[test]
fn a_read_only_grant_or_token_only_reads_a_plain_http_route() {
    let (e, grants) = shared_with_bob(true);
    let route = Route {
        grants: &grants,
        ..PLAIN
    };
    let get = decide(
        &caller(BOB),
        Access::Full,
        &route,
        &head("GET", &[]),
        Body::Opaque,
        &e,
    );
    assert_eq!(allowed(&get).rule.as_deref(), Some("grant-g1"));
    let put = decide(
        &caller(BOB),
        Access::Full,
        &route,
        &head("PUT", &[]),
        Body::Opaque,
        &e,
    );
    match refusal(&put) {
        Refusal::Path(p) => assert_eq!(p, &PathRefusal::ReadOnly("PUT".into())),
        other => panic!("{other:?}"),
    }
    // The owner is not limited by the grants; a full grant does not limit.
    let put = decide(
        &caller(OWNER),
        Access::Full,
        &route,
        &head("PUT", &[]),
        Body::Opaque,
        &e,
    );
    assert!(!allowed(&put).only_reads);
    let (e, grants) = shared_with_bob(false);
    let route = Route {
        grants: &grants,
        ..PLAIN
    };
    let post = decide(
        &caller(BOB),
        Access::Full,
        &route,
        &head("POST", &[]),
        Body::Opaque,
        &e,
    );
    allowed(&post);
    // An mcp:read token reads a plain HTTP route only.
    let post = decide(
        &caller(BOB),
        Access::Read,
        &route,
        &head("POST", &[]),
        Body::Opaque,
        &e,
    );
    match refusal(&post) {
        Refusal::InsufficientScope { id, what } => {
            assert_eq!(id, &None);
            assert_eq!(what, "POST on a plain HTTP route");
        }
        other => panic!("{other:?}"),
    }
    // On an MCP route the same token may POST (JSON-RPC, judged above).
    let (e, grants) = shared_with_bob(true);
    let route = Route {
        grants: &grants,
        ..MCP
    };
    let delete = decide(
        &caller(BOB),
        Access::Read,
        &route,
        &head("DELETE", &[]),
        Body::Opaque,
        &e,
    );
    allowed(&delete);
}
