//! Session affinity across replicas: two agents of one owner serve a route
//! with the stateful built-in SQLite server; every message of an MCP session
//! must reach the agent that created the session, for real clients (the
//! TypeScript SDK over Streamable HTTP, the Python SDK over legacy SSE). When
//! that agent is gone, the session's requests get 404 and a new session works.

use std::process::Stdio;
use std::time::Duration;

use e2e::{AgentProc, RelayProc, TempDir};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SESSIONS: usize = 6;

async fn two_replicas(relay: &RelayProc, dir: &TempDir) -> (AgentProc, AgentProc) {
    let agent_token = relay.token("alice@x", false);
    let mut agents = Vec::new();
    for name in ["a", "b"] {
        let db = dir.path().join(format!("{name}.db")).display().to_string();
        agents.push(
            AgentProc::start_upstream(relay, &agent_token, "db", &["--sqlite", &db], "quic").await,
        );
    }
    let b = agents.pop().expect("b");
    let a = agents.pop().expect("a");
    (a, b)
}

/// Reads the next line of the script's stdout as JSON.
async fn next_json(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> serde_json::Value {
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .expect("the script answers within 120 s")
        .expect("read stdout")
        .expect("a line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_sessions_stick_to_their_replica_and_start_again_when_it_is_gone() {
    let relay = RelayProc::start(&[]).await;
    let dir = TempDir::new("affinity-ts");
    let (mut a, _b) = two_replicas(&relay, &dir).await;
    let token = relay.token("alice@x", true);

    let mut child = tokio::process::Command::new("node")
        .arg(e2e::node::dir().join("ts_replicas.mjs"))
        .arg(relay.route_url("db"))
        .arg(&token)
        .arg(SESSIONS.to_string())
        .env("NODE_EXTRA_CA_CERTS", relay.ca())
        .current_dir(e2e::node::dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node ts_replicas.mjs");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();

    // Every session connects and works, although its initialize and its
    // later messages were spread over two replicas by round-robin before.
    let v = next_json(&mut lines).await;
    eprintln!("connected: {v}");
    let sessions = v["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), SESSIONS, "{v}");
    for s in sessions {
        assert_eq!(s["connected"], true, "{v}");
        assert_eq!(s["tools"], 6, "{v}");
        assert_eq!(s["rows"][0]["n"], 12, "{v}");
    }

    // One replica stops: its sessions get 404 (the SDK's cue to start a new
    // session), and a new session works on the other replica; the other
    // replica's sessions carry on.
    a.proc.signal("TERM");
    assert!(
        a.proc.wait_exit(Duration::from_secs(15)).await.is_some(),
        "agent a stops"
    );
    stdin.write_all(b"go\n").await.expect("tell the script");
    stdin.flush().await.expect("flush");
    let v = next_json(&mut lines).await;
    eprintln!("after one replica stopped: {v}");
    let after = v["sessions"].as_array().expect("sessions");
    assert_eq!(after.len(), SESSIONS, "{v}");
    let (mut kept, mut renewed) = (0, 0);
    for s in after {
        if s["ok"] == true {
            kept += 1;
            assert_eq!(s["rows"][0]["n"], 12, "{v}");
        } else {
            renewed += 1;
            assert_eq!(s["code"], 404, "a gone session is 404: {v}");
            assert!(
                s["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("unknown_session")),
                "the relay says why: {v}"
            );
            assert_eq!(s["new_session"]["connected"], true, "{v}");
            assert_eq!(s["new_session"]["rows"][0]["n"], 12, "{v}");
        }
    }
    // Round-robin put sessions on both replicas.
    assert!(
        kept > 0 && renewed > 0,
        "kept {kept}, renewed {renewed}: {v}"
    );
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sse_sessions_stick_to_their_replica() {
    let relay = RelayProc::start(&[]).await;
    let dir = TempDir::new("affinity-legacy");
    let (_a, _b) = two_replicas(&relay, &dir).await;
    let token = relay.token("alice@x", true);
    for i in 0..4 {
        let v = e2e::python::run_json(
            "mcp_legacy_sse_client.py",
            &[
                relay.route_url("db").into(),
                token.clone().into(),
                relay.ca().into(),
            ],
        )
        .await;
        eprintln!("legacy session {i}: {v}");
        assert_eq!(v["tools"].as_array().map(Vec::len), Some(6), "{v}");
        assert_eq!(v["read"]["is_error"], false, "{v}");
        assert_eq!(v["read"]["structured"]["rows"][0]["n"], 12, "{v}");
    }
}
