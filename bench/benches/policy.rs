//! The relay's per-message decision, step by step: JSON-RPC classification,
//! SQL classification, the Cedar decision. Run: `cargo bench -p bench --bench policy`.

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion};
use policy::{jsonrpc, sql, Caller, Engine, Policy, Request};

const OWNER: &str = "bench@example.com";
const TOOLS_CALL: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_query","arguments":{"query":"SELECT 1 AS one"}}}"#;
const JOIN: &str = "SELECT c.name, sum(o.total) FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.created_at > '2026-01-01' GROUP BY c.name ORDER BY 2 DESC LIMIT 10";

fn caller() -> Caller<'static> {
    Caller {
        email: OWNER,
        groups: &[],
        client_id: "bench",
        client_name: None,
        route: "sql",
        route_owner: OWNER,
        time: SystemTime::now(),
    }
}

fn policy(c: &mut Criterion) {
    let engine = Engine::new(
        Policy::from_flags(&[], None, false).expect("owner policy"),
        None,
    );
    let read_only = Engine::new(
        Policy::from_flags(&[], None, true).expect("read-only policy"),
        None,
    );
    let messages = jsonrpc::classify_body(TOOLS_CALL).expect("classify");
    let message = &messages[0];
    let facts = sql::classify("SELECT 1 AS one");

    c.bench_function("jsonrpc::classify_body (tools/call)", |b| {
        b.iter(|| jsonrpc::classify_body(black_box(TOOLS_CALL)))
    });
    c.bench_function("sql::classify (SELECT 1)", |b| {
        b.iter(|| sql::classify(black_box("SELECT 1 AS one")))
    });
    c.bench_function("sql::classify (join, group, order)", |b| {
        b.iter(|| sql::classify(black_box(JOIN)))
    });
    c.bench_function("Engine::decide (owner only)", |b| {
        b.iter(|| {
            engine.decide(black_box(&Request {
                caller: caller(),
                message,
                sql: Some(&facts),
            }))
        })
    });
    c.bench_function("Engine::decide (read-only, judges the SQL)", |b| {
        b.iter(|| {
            read_only.decide(black_box(&Request {
                caller: caller(),
                message,
                sql: Some(&facts),
            }))
        })
    });
    c.bench_function("whole message (classify + SQL + decide)", |b| {
        b.iter(|| {
            let ms = jsonrpc::classify_body(black_box(TOOLS_CALL)).expect("classify");
            let f = ms[0].sql_argument().map(sql::classify);
            engine.decide(&Request {
                caller: caller(),
                message: &ms[0],
                sql: f.as_ref(),
            })
        })
    });
}

criterion_group!(benches, policy);
criterion_main!(benches);
