//! What the fuzzers check about the classifiers and the engine, in one place,
//! so that the fuzz targets (`fuzz/`) and the corpus replay tests
//! (`policy/tests/fuzz_corpus.rs`) run exactly the same checks.
//!
//! Not part of the API: hidden from the docs, no stability promise.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::jsonrpc::{self, MessageKind};
use crate::sql::{self, SqlFacts};
use crate::{Caller, Engine, Policy};

/// A JSON-RPC body as a client could send it:
/// * classification never panics;
/// * every message it accepts is a consistent one (requests have an id and a
///   method, notifications a method and no id, responses no method);
/// * the 2026-07-28 header check never panics, and always accepts headers
///   derived from the message itself;
/// * any SQL argument is classified (see [`sql`]) and every message is
///   decided without panicking (see [`decide`]).
pub fn jsonrpc(data: &[u8]) {
    let Ok(messages) = jsonrpc::classify_body(data) else {
        return;
    };
    assert!(!messages.is_empty(), "an accepted body has messages");
    for m in &messages {
        match m.kind {
            MessageKind::Request => assert!(m.id.is_some() && m.method.is_some(), "{m:?}"),
            MessageKind::Notification => assert!(m.id.is_none() && m.method.is_some(), "{m:?}"),
            MessageKind::Response | MessageKind::Error => assert!(m.method.is_none(), "{m:?}"),
        }
        if let Some(method) = &m.method {
            let target = m.target.as_deref().map(|t| {
                if t.is_ascii() && !t.chars().any(|c| c.is_ascii_control()) {
                    t.to_owned()
                } else {
                    use base64::Engine as _;
                    format!(
                        "=?base64?{}?=",
                        base64::engine::general_purpose::STANDARD.encode(t)
                    )
                }
            });
            if method.is_ascii() && !method.chars().any(|c| c.is_ascii_control()) {
                let checked = jsonrpc::check_headers(Some(method), target.as_deref(), m);
                assert!(
                    checked.is_ok(),
                    "own headers refused: {checked:?} for {m:?}"
                );
            }
        }
        let _ = jsonrpc::check_headers(Some("tools/call"), Some("x"), m);
        if let Some(query) = m.sql_argument() {
            check_sql(query);
        }
    }
    decide(&messages);
}

/// A SQL string: classification never panics, and its facts are consistent
/// (read-only implies parsed; not parsed means no statements, tables or
/// functions, and an error).
pub fn sql(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        check_sql(text);
    }
}

fn check_sql(text: &str) -> SqlFacts {
    let facts = sql::classify(text);
    if facts.read_only {
        assert!(facts.parsed, "read-only but not parsed: {text:?}");
    }
    if !facts.parsed {
        assert!(facts.error.is_some(), "{text:?}");
        assert!(
            facts.statements.is_empty() && facts.tables.is_empty() && facts.functions.is_empty(),
            "unparsed SQL with facts: {text:?}"
        );
    }
    facts
}

/// Every message decided by an owner-only engine with a read-only rule:
/// never panics; a stranger is never allowed; the owner is never allowed a
/// tool call whose SQL does not parse or writes.
fn decide(messages: &[jsonrpc::Message]) {
    static ENGINE: OnceLock<Option<Engine>> = OnceLock::new();
    let Some(engine) = ENGINE.get_or_init(|| {
        Policy::from_flags(&[], None, true)
            .ok()
            .map(|p| Engine::new(p, None))
    }) else {
        panic!("the built-in flags policy does not compile");
    };
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let caller = |email| Caller {
        email,
        groups: &[],
        client_id: "fuzz",
        client_name: None,
        route: "db",
        route_owner: "owner@example.com",
        time,
    };
    let facts: Vec<Option<SqlFacts>> = messages
        .iter()
        .map(|m| m.sql_argument().map(sql::classify))
        .collect();
    let stranger = engine.decide_body(caller("stranger@example.com"), messages, &facts);
    assert!(
        stranger.iter().all(|d| !d.allowed),
        "a stranger was allowed"
    );
    let owner = engine.decide_body(caller("owner@example.com"), messages, &facts);
    for ((m, f), d) in messages.iter().zip(&facts).zip(&owner) {
        if let Some(f) = f {
            if d.allowed {
                assert!(
                    f.parsed && f.read_only,
                    "read-only let through {m:?}: {f:?}"
                );
            }
        }
    }
}
