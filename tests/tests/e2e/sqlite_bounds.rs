//! The built-in SQLite server cannot be used to stall or exhaust the laptop
//! (issue 14, point 4): through the real relay and agent, a read-only
//! grantee's endless queries are cut at `--sqlite-timeout` while the owner's
//! calls answer at once, a value over `--sqlite-max-value-bytes`
//! (`zeroblob(1e8)`) is refused without the agent's memory growing, and
//! rows, answer size and calls in flight per identity are bounded, each
//! with a tool error naming its flag, for the Rust SDK (rmcp) and the
//! TypeScript SDK (npm), directly and through `mcp-remote`.

use std::time::{Duration, Instant};

use e2e::client::{full_body, Answer};
use e2e::mcp;
use e2e::{rss_kib, AgentProc, HttpsClient, RelayProc, TempDir};
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use rmcp::{Peer, RoleClient};
use serde_json::{json, Value};

use crate::sharing::{logged_in, share};

const OWNER: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

const ENDLESS: &str =
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) AS n FROM n";

fn obj(v: Value) -> JsonObject {
    match v {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

async fn call(client: &Peer<RoleClient>, tool: &str, args: Value) -> CallToolResult {
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(obj(args)))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

async fn query(client: &Peer<RoleClient>, sql: &str) -> CallToolResult {
    call(client, "read_query", json!({ "query": sql })).await
}

/// A failed call's message.
#[track_caller]
fn tool_error(r: &CallToolResult) -> String {
    assert_eq!(r.is_error, Some(true), "{r:?}");
    r.content[0].as_text().expect("text content").text.clone()
}

#[track_caller]
fn ok(r: &CallToolResult) -> Value {
    assert_eq!(r.is_error, Some(false), "{r:?}");
    r.structured_content.clone().expect("structuredContent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grantee_cannot_stall_or_exhaust_the_sqlite_server() {
    let dir = TempDir::new("sqlite-bounds");
    let db = dir.path().join("demo.db").display().to_string();
    let relay = RelayProc::start(&[]).await;
    let alice_token = relay.token(OWNER, false);
    let agent = AgentProc::start_upstream(
        &relay,
        &alice_token,
        "db",
        &[
            "--sqlite",
            &db,
            // Long enough that "the owner answers at once" cannot be the
            // endless queries ending.
            "--sqlite-timeout",
            "20s",
            "--sqlite-max-rows",
            "10",
            "--sqlite-max-answer-bytes",
            "65536",
            "--sqlite-max-calls-per-identity",
            "2",
        ],
        "auto",
    )
    .await;
    let alice_config = logged_in(&relay, OWNER, &alice_token);
    let (code, _, err) = share(&alice_config, &["db", "--with", BOB, "--read-only"]).await;
    assert_eq!(code, 0, "{err}");

    let url = relay.route_url("db");
    let alice = mcp::connect(&url, &relay.ca(), &relay.token(OWNER, true)).await;
    let bob = mcp::connect(&url, &relay.ca(), &relay.token(BOB, true)).await;

    // Bob's two endless queries (his whole allowance of calls in flight).
    let spawn_endless = || {
        let bob = bob.peer().clone();
        tokio::spawn(async move { query(&bob, ENDLESS).await })
    };
    let mut endless = vec![spawn_endless(), spawn_endless()];
    // Once both run on the laptop, a third call of Bob's is refused. (A
    // probe that got in first may have made an endless query be refused
    // instead: that one is started again.)
    let deadline = Instant::now() + Duration::from_secs(30);
    let third = loop {
        for slot in endless.iter_mut() {
            if slot.is_finished() {
                let r = std::mem::replace(slot, spawn_endless())
                    .await
                    .expect("task");
                let e = tool_error(&r);
                assert!(e.contains("calls in flight"), "{e}");
            }
        }
        let r = query(&bob, "SELECT 1 AS one").await;
        if r.is_error == Some(true) {
            break tool_error(&r);
        }
        assert!(
            Instant::now() < deadline,
            "Bob's third call was never refused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        third.contains("calls in flight") && third.contains("--sqlite-max-calls-per-identity"),
        "{third}"
    );

    // Meanwhile the owner's calls answer promptly.
    let asked = Instant::now();
    let tables = ok(&call(&alice, "list_tables", json!({})).await);
    assert!(tables["tables"].to_string().contains("orders"), "{tables}");
    let count = ok(&query(&alice, "SELECT count(*) AS n FROM orders").await);
    assert_eq!(count["rows"][0]["n"], 25, "{count}");
    let took = asked.elapsed();
    eprintln!("the owner's list_tables and read_query took {took:?} beside two endless queries");
    assert!(took < Duration::from_secs(8), "{took:?}");

    // Bob's endless queries are cut at the time bound, with a clear error.
    for t in endless {
        let r = t.await.expect("task");
        let e = tool_error(&r);
        assert!(
            e.contains("stopped after 20s") && e.contains("--sqlite-timeout"),
            "{e}"
        );
    }
    // Bob may call again now.
    assert_eq!(
        ok(&query(&bob, "SELECT 1 AS one").await)["rows"][0]["one"],
        1
    );

    // A huge value is refused before it is made: the agent's memory stays put.
    let (rss_before, _) = rss_kib(agent.proc.pid);
    for _ in 0..5 {
        let e = tool_error(&query(&bob, "SELECT zeroblob(1e8) AS z").await);
        assert!(e.contains("--sqlite-max-value-bytes"), "{e}");
        let e = tool_error(&query(&bob, "SELECT length(randomblob(1e8)) AS n").await);
        assert!(e.contains("--sqlite-max-value-bytes"), "{e}");
    }
    let (rss_after, peak) = rss_kib(agent.proc.pid);
    eprintln!("agent RSS {rss_before} KiB before five zeroblob(1e8), {rss_after} KiB after, peak {peak} KiB");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "{rss_before} → {rss_after} KiB"
    );
    assert!(peak < 512 * 1024, "peak {peak} KiB");

    // Rows: ten pass, more is an error that says what to do.
    let ten = ok(&query(&bob, "SELECT * FROM orders LIMIT 10").await);
    assert_eq!(ten["row_count"], 10, "{ten}");
    let e = tool_error(&query(&bob, "SELECT * FROM orders").await);
    assert!(
        e.contains("more than 10 rows") && e.contains("--sqlite-max-rows"),
        "{e}"
    );
    // The answer's size.
    let e = tool_error(&query(&bob, "SELECT printf('%.*c', 100000, 'x') AS big").await);
    assert!(e.contains("--sqlite-max-answer-bytes"), "{e}");
    // Below every bound, the same query shape answers.
    let small = ok(&query(&bob, "SELECT length(printf('%.*c', 1000, 'x')) AS n").await);
    assert_eq!(small["rows"][0]["n"], 1000, "{small}");

    // The TypeScript SDK (npm) gets the same clear tool error, directly and
    // through mcp-remote.
    let bob_token = relay.token(BOB, true);
    for via in [None, Some("--via-mcp-remote")] {
        let mut args: Vec<std::ffi::OsString> = vec![
            url.clone().into(),
            bob_token.clone().into(),
            "1".into(),
            "--query=SELECT zeroblob(1e8) AS z".into(),
        ];
        args.extend(via.map(Into::into));
        let v = e2e::node::run_json("ts_client.mjs", &relay.ca(), &args).await;
        let s = &v["sessions"][0];
        assert_eq!(s["read_is_error"], true, "{via:?}: {v}");
        assert!(
            s["read_error"]
                .as_str()
                .is_some_and(|e| e.contains("--sqlite-max-value-bytes")),
            "{via:?}: {v}"
        );
    }
    let (rss, peak) = rss_kib(agent.proc.pid);
    assert!(rss < rss_before + 64 * 1024, "{rss_before} → {rss} KiB");
    assert!(peak < 512 * 1024, "peak {peak} KiB");

    alice.cancel().await.expect("close");
    bob.cancel().await.expect("close");
}

/// A raw Streamable HTTP request to `url` with `token`.
async fn post(
    http: &HttpsClient,
    url: &str,
    token: &str,
    method: &str,
    session: Option<&str>,
    body: &Value,
) -> Answer {
    let mut b = http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(s) = session {
        b = b.header("mcp-session-id", s);
    }
    http.fetch(b.body(full_body(body.to_string())).expect("request"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_cannot_fill_the_laptop_with_mcp_sessions() {
    let dir = TempDir::new("sqlite-sessions");
    let db = dir.path().join("demo.db").display().to_string();
    let relay = RelayProc::start(&[]).await;
    let alice_token = relay.token(OWNER, false);
    let agent = AgentProc::start_upstream(
        &relay,
        &alice_token,
        "db",
        &["--sqlite", &db, "--sqlite-max-sessions-per-identity", "3"],
        "auto",
    )
    .await;
    let alice_config = logged_in(&relay, OWNER, &alice_token);
    let (code, _, err) = share(&alice_config, &["db", "--with", BOB, "--read-only"]).await;
    assert_eq!(code, 0, "{err}");
    let url = relay.route_url("db");
    let bob = relay.token(BOB, true);
    let http = HttpsClient::new(&relay.ca(), false);
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},
        "clientInfo":{"name":"flood","version":"1"}}});

    // Bob holds at most three sessions: each initialize past them ends his
    // oldest, so a flood of them costs the laptop nothing and locks no one
    // out, not even Bob.
    let list = json!({"jsonrpc":"2.0","id":2,"method":"tools/list"});
    let mut first = Vec::new();
    for _ in 0..3 {
        let a = post(&http, &url, &bob, "POST", None, &init).await;
        assert_eq!(a.status, 200, "{}", a.text());
        let sid = a.headers.get("mcp-session-id").expect("session id");
        first.push(sid.to_str().expect("ascii").to_owned());
    }
    let (rss_before, _) = rss_kib(agent.proc.pid);
    let mut last = Vec::new();
    for _ in 0..300 {
        let a = post(&http, &url, &bob, "POST", None, &init).await;
        assert_eq!(a.status, 200, "{}", a.text());
        let sid = a.headers.get("mcp-session-id").expect("session id");
        last.push(sid.to_str().expect("ascii").to_owned());
    }
    let (rss_after, _) = rss_kib(agent.proc.pid);
    eprintln!("agent RSS {rss_before} KiB before 300 more initializes, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 16 * 1024,
        "{rss_before} → {rss_after} KiB"
    );

    // The owner still connects and works.
    let alice = mcp::connect(&url, &relay.ca(), &relay.token(OWNER, true)).await;
    let tables = ok(&call(&alice, "list_tables", json!({})).await);
    assert!(tables["tables"].to_string().contains("orders"), "{tables}");
    alice.cancel().await.expect("close");

    // Bob's three newest sessions work; his first ones were ended (404, so
    // his client starts a new session).
    for sid in &last[last.len() - 3..] {
        let a = post(&http, &url, &bob, "POST", Some(sid), &list).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    for sid in first.iter().chain(&last[..last.len() - 3]).take(20) {
        let a = post(&http, &url, &bob, "POST", Some(sid), &list).await;
        assert_eq!(a.status, 404, "{sid}: {}", a.text());
    }
}

#[test]
fn an_upstreams_tuning_flag_with_another_upstream_is_refused_not_ignored() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["--http", "http://127.0.0.1:9/mcp", "--sqlite-max-rows", "5"],
            "--sqlite-max-rows applies only with --sqlite",
        ),
        (
            &["--http", "http://127.0.0.1:9/mcp", "--max-sessions", "5"],
            "--max-sessions applies only to a stdio server (-- CMD ARGS)",
        ),
        (
            &["--sqlite", "x.db", "--unused-session-timeout", "5s"],
            "--unused-session-timeout applies only to a stdio server",
        ),
    ];
    for (args, want) in cases {
        let out = std::process::Command::new(e2e::procs::bin("agent"))
            .args(["connect", "--relay", "https://127.0.0.1:9", "--token-file"])
            .arg("/dev/null")
            .args(args)
            .output()
            .expect("run agent");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
