//! The breakdown scenario: where the time of one Drawbridge `tools/call`
//! goes, hop by hop, at one request in flight.
//!
//! Every part comes from a measurement of the run itself, joined per request
//! by the relay's `x-request-id`: the client's round trip (the bench), the
//! relay's own figures for the same request (its log line: `head_us`,
//! `policy_us`, `agent_us`; its audit event: `latency_ms`, from the request's
//! arrival to the end of its answer), and the local server's own time (the
//! built-in SQLite MCP service, the code the agent runs, timed in the bench's
//! copy of it over the same requests sent directly). Nothing is switched on
//! in the relay for it: these are the figures it always logs.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::client::{Conn, Target};
use crate::record::{percentile, Record};
use crate::systems::{self, Env};
use crate::upstream::ServiceTimes;

/// The parts, in the order of the report's table.
pub const PARTS: [&str; 8] = [
    // The client's round trip through the relay.
    "total",
    // total − the relay's time (audit latency): TLS, HTTP/1.1 and loopback
    // both ways, the client itself, and the audit write.
    "client-relay",
    // head − agent − policy: authenticate, route, read the body, build the
    // exchange, take in the answer's head.
    "relay-before",
    // The policy decision (classify + SQL + tool pins + Cedar, the relay's
    // policy_us).
    "policy",
    // agent_us: the tunnel both ways, the agent, the local server.
    "agent",
    // audit latency − head: the answer's body through the relay, up to the
    // audit event.
    "relay-after",
    // The SQLite MCP service's own time per request.
    "local-server",
    // The same request sent to the local server directly.
    "direct",
];

/// The relay's figures of one request, from its log line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelayTimes {
    pub head_us: f64,
    pub policy_us: Option<f64>,
    pub agent_us: Option<f64>,
}

/// The request id and figures of a relay log line, if it is a request's line
/// (`... request request_id="…" … head_us=… policy_us=… agent_us=…`).
pub fn parse_log_line(line: &str) -> Option<(String, RelayTimes)> {
    let mut id = None;
    let (mut head, mut policy, mut agent) = (None, None, None);
    for token in line.split_whitespace() {
        let Some((key, value)) = token.split_once('=') else {
            continue;
        };
        let value = value.trim_matches('"');
        match key {
            "request_id" => id = Some(value.to_owned()),
            "head_us" => head = value.parse::<f64>().ok(),
            "policy_us" => policy = value.parse::<f64>().ok(),
            "agent_us" => agent = value.parse::<f64>().ok(),
            _ => {}
        }
    }
    Some((
        id.filter(|i| !i.is_empty())?,
        RelayTimes {
            head_us: head?,
            policy_us: policy,
            agent_us: agent,
        },
    ))
}

/// Every request's figures in a relay log.
pub fn parse_log(text: &str) -> HashMap<String, RelayTimes> {
    text.lines().filter_map(parse_log_line).collect()
}

/// Each request's relay latency (µs, arrival to the end of the answer) from
/// the audit trail's lines; requests with more than one event keep the
/// largest.
pub fn parse_audit(text: &str) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = HashMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(id), Some(ms)) = (
            v.get("request_id").and_then(|i| i.as_str()),
            v.get("latency_ms").and_then(|l| l.as_f64()),
        ) else {
            continue;
        };
        let us = ms * 1000.0;
        let e = out.entry(id.to_owned()).or_insert(us);
        *e = e.max(us);
    }
    out
}

/// One request as the client saw it.
pub struct Call {
    pub request_id: String,
    pub total_us: f64,
}

/// Each part's samples (µs, sorted) over the requests the relay's log and
/// audit both know.
pub fn split(
    calls: &[Call],
    log: &HashMap<String, RelayTimes>,
    audit: &HashMap<String, f64>,
) -> HashMap<&'static str, Vec<f64>> {
    let mut parts: HashMap<&'static str, Vec<f64>> = HashMap::new();
    for c in calls {
        let (Some(t), Some(&relay_us)) = (log.get(&c.request_id), audit.get(&c.request_id)) else {
            continue;
        };
        let (policy, agent) = (t.policy_us.unwrap_or(0.0), t.agent_us.unwrap_or(0.0));
        for (part, v) in [
            ("total", c.total_us),
            ("client-relay", c.total_us - relay_us),
            ("relay-before", t.head_us - agent - policy),
            ("policy", policy),
            ("agent", agent),
            ("relay-after", relay_us - t.head_us),
        ] {
            parts.entry(part).or_default().push(v);
        }
    }
    for v in parts.values_mut() {
        v.sort_by(f64::total_cmp);
    }
    parts
}

/// The record of one part from its sorted samples.
fn record(part: &str, sorted: &[f64]) -> Record {
    let mut r = Record::new("drawbridge-quic", "breakdown");
    r.part = Some(part.to_owned());
    r.concurrency = Some(1);
    r.p50_us = Some(percentile(sorted, 0.5));
    r.p99_us = Some(percentile(sorted, 0.99));
    r.runs = Some(sorted.len() as u64);
    r
}

/// `tools/call` back to back on one connection for `duration` (after
/// `warmup`), each with its request id and round trip.
async fn calls(target: &Target, warmup: usize, duration: Duration) -> anyhow::Result<Vec<Call>> {
    let mut conn = Conn::open(target).await?;
    for _ in 0..warmup {
        conn.tools_call().await.context("warm-up")?;
    }
    let mut out = Vec::with_capacity(8192);
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let t = Instant::now();
        let id = conn.traced_tools_call().await?;
        out.push(Call {
            request_id: id.unwrap_or_default(),
            total_us: t.elapsed().as_nanos() as f64 / 1000.0,
        });
    }
    Ok(out)
}

/// The scenario: the request sent directly (the local server timed), then
/// through drawbridge-quic; one record per part.
pub async fn run(
    env: &Env<'_>,
    times: &ServiceTimes,
    warmup: usize,
    duration: Duration,
) -> anyhow::Result<Vec<Record>> {
    let dir = env.dir.join("breakdown");
    let env = Env {
        tools: env.tools,
        upstream: env.upstream,
        db: env.db,
        dir: &dir,
    };
    let mut out = Vec::new();

    let direct = systems::start("direct", &env).await?;
    times.start();
    let sent = calls(&direct.target, warmup, duration).await;
    let served = times.take();
    let mut totals: Vec<f64> = sent?.iter().map(|c| c.total_us).collect();
    totals.sort_by(f64::total_cmp);
    drop(direct);

    let running = systems::start("drawbridge-quic", &env).await?;
    let sent = calls(&running.target, warmup, duration).await?;
    let Some(files) = &running.relay_files else {
        bail!("drawbridge-quic started without a relay");
    };
    // The log line and the audit event are written before the client has
    // the end of the answer; the read is after the last one.
    let log = parse_log(&read(&files.log)?);
    let audit = parse_audit(&read(&files.state.join("audit.jsonl"))?);
    drop(running);
    let mut parts = split(&sent, &log, &audit);
    let Some(n) = parts.get("total").map(Vec::len) else {
        bail!(
            "none of the {} requests is in both the relay's log and its audit trail",
            sent.len()
        );
    };
    if n * 10 < sent.len() * 9 {
        bail!(
            "only {n} of {} requests are in the relay's log and audit trail",
            sent.len()
        );
    }
    parts.insert("local-server", served);
    parts.insert("direct", totals);
    for part in PARTS {
        match parts.get(part) {
            Some(v) if !v.is_empty() => out.push(record(part, v)),
            _ => bail!("no samples of {part}"),
        }
    }
    Ok(out)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "2026-12-06T12:40:01.123456Z  INFO relay::gateway: request \
        request_id=\"3f9a0c1d2e4b5a69\" peer=127.0.0.1:50412 method=POST path=\"/mcp/sql\" \
        status=200 head_us=612 policy_us=12 agent_us=480";

    #[test]
    fn a_request_line_gives_its_id_and_figures() {
        let (id, t) = parse_log_line(LINE).expect("a request line");
        assert_eq!(id, "3f9a0c1d2e4b5a69");
        assert_eq!(
            t,
            RelayTimes {
                head_us: 612.0,
                policy_us: Some(12.0),
                agent_us: Some(480.0)
            }
        );
    }

    #[test]
    fn a_refused_request_has_no_agent_or_policy_figure() {
        // Option fields that are None are left out of the line.
        let line = "INFO relay::gateway: request request_id=\"ab\" status=401 head_us=40";
        let (_, t) = parse_log_line(line).expect("a request line");
        assert_eq!((t.head_us, t.policy_us, t.agent_us), (40.0, None, None));
    }

    #[test]
    fn other_lines_are_not_requests() {
        for line in [
            "INFO relay: listening on 127.0.0.1:4443",
            // An exchange's warning names the request but has no head_us.
            "WARN relay::gateway: exchange failed request_id=\"ab\" route=\"sql\"",
            "INFO relay::gateway: request request_id=\"\" head_us=5",
            "",
        ] {
            assert_eq!(parse_log_line(line), None, "{line}");
        }
        assert_eq!(parse_log(&format!("junk\n{LINE}\nmore junk\n")).len(), 1);
    }

    #[test]
    fn the_audit_gives_each_request_its_longest_event() {
        let text = concat!(
            r#"{"time":"t","request_id":"a","latency_ms":0.75,"seq":1,"prev":"x","hash":"y"}"#,
            "\n",
            r#"{"time":"t","request_id":"a","latency_ms":0.8}"#,
            "\n",
            r#"{"time":"t","request_id":"b","latency_ms":1.5}"#,
            "\n",
            "{\"torn\n",
        );
        let a = parse_audit(text);
        assert_eq!(a.len(), 2);
        assert!((a["a"] - 800.0).abs() < 1e-9);
        assert!((a["b"] - 1500.0).abs() < 1e-9);
    }

    #[test]
    fn the_parts_add_up_to_the_round_trip() {
        let (log, audit) = (
            parse_log(LINE),
            parse_audit(r#"{"request_id":"3f9a0c1d2e4b5a69","latency_ms":0.7}"#),
        );
        let calls = [
            Call {
                request_id: "3f9a0c1d2e4b5a69".into(),
                total_us: 900.0,
            },
            // Unknown to the relay: left out.
            Call {
                request_id: "other".into(),
                total_us: 5.0,
            },
        ];
        let p = split(&calls, &log, &audit);
        let one = |k: &str| p[k][0];
        assert_eq!(p["total"].len(), 1);
        assert!((one("client-relay") - 200.0).abs() < 1e-9);
        assert!((one("relay-before") - 120.0).abs() < 1e-9);
        assert!((one("relay-after") - 88.0).abs() < 1e-9);
        let sum = one("client-relay")
            + one("relay-before")
            + one("policy")
            + one("agent")
            + one("relay-after");
        assert!((sum - one("total")).abs() < 1e-9, "{sum}");
    }
}
