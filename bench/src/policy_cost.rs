//! The relay's per-message decision, timed in process: what the gateway's
//! classify and decide phases (`relay/src/gateway/`) do for each JSON-RPC
//! message (classify the body, classify its SQL, decide with Cedar). The
//! criterion benchmark (`bench/benches/policy.rs`) times the three steps
//! apart.

use std::time::{Instant, SystemTime};

use policy::{jsonrpc, sql, Caller, Engine, Policy, Request};

use crate::client::TOOLS_CALL;
use crate::record::{percentile, Record};
use crate::systems::{OWNER, SQL_ROUTE};

/// Times `runs` decisions of the small scenario's `tools/call`.
pub fn run(runs: usize) -> anyhow::Result<Record> {
    let engine = Engine::new(Policy::from_flags(&[], None, false)?, None);
    let body = TOOLS_CALL.as_bytes();
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.min(1000) {
        decide_once(&engine, body)?;
    }
    for _ in 0..runs {
        let t = Instant::now();
        decide_once(&engine, body)?;
        times.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let mut r = Record::new("drawbridge-quic", "policy");
    r.p50_us = Some(percentile(&times, 0.5));
    r.p99_us = Some(percentile(&times, 0.99));
    r.runs = Some(runs as u64);
    Ok(r)
}

fn decide_once(engine: &Engine, body: &[u8]) -> anyhow::Result<()> {
    let messages = jsonrpc::classify_body(body)?;
    for m in &messages {
        let facts = m.sql_argument().map(sql::classify);
        let d = engine.decide(&Request {
            caller: Caller {
                email: OWNER,
                groups: &[],
                client_id: "bench",
                client_name: None,
                route: SQL_ROUTE,
                route_owner: OWNER,
                time: SystemTime::now(),
            },
            message: m,
            sql: facts.as_ref(),
        });
        anyhow::ensure!(d.allowed, "the owner's own tools/call was denied: {d:?}");
    }
    Ok(())
}
