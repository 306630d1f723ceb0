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

/// Reads a legacy stream until `needle`; false if the stream ended first.
async fn read_legacy(body: &mut hyper::body::Incoming, text: &mut String, needle: &str) -> bool {
    use http_body_util::BodyExt;
    while !text.contains(needle) {
        let frame = tokio::time::timeout(Duration::from_secs(20), body.frame())
            .await
            .unwrap_or_else(|_| panic!("{needle:?} within 20 s; got {text:?}"));
        match frame {
            None | Some(Err(_)) => return false,
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    text.push_str(&String::from_utf8_lossy(&d));
                }
            }
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_session_whose_replica_is_gone_gets_404_and_its_stream_ends() {
    use e2e::client::full_body;
    let relay = RelayProc::start(&[]).await;
    let dir = TempDir::new("affinity-legacy-gone");
    let (a, b) = two_replicas(&relay, &dir).await;
    let token = relay.token("alice@x", true);
    let client = e2e::HttpsClient::new(&relay.ca(), false);
    let bearer = format!("Bearer {token}");
    let request = |method: &str, url: &str, body: &str| {
        let mut r = http::Request::builder()
            .method(method)
            .uri(url)
            .header("authorization", &bearer);
        r = if method == "GET" {
            r.header("accept", "text/event-stream")
        } else {
            r.header("content-type", "application/json")
        };
        r.body(full_body(body.to_owned())).expect("request")
    };
    let stream = client
        .send(request("GET", &relay.route_url("db"), ""))
        .await;
    assert_eq!(stream.status(), 200);
    let mut stream = stream.into_body();
    let mut text = String::new();
    assert!(read_legacy(&mut stream, &mut text, "\n\n").await);
    let endpoint = text
        .strip_prefix("event: endpoint\ndata: ")
        .and_then(|t| t.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("not an endpoint event: {text:?}"))
        .to_owned();
    let post_url = format!("{}{endpoint}", relay.url());
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#;
    let answer = client.fetch(request("POST", &post_url, init)).await;
    assert_eq!(answer.status, 202, "{}", answer.text());
    assert!(read_legacy(&mut stream, &mut text, "serverInfo").await);

    // Stop the replica that answered the initialize (its live line says so).
    let printed = |p: &AgentProc| {
        p.proc
            .stdout
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.contains("initialize"))
    };
    let waited = std::time::Instant::now();
    while !printed(&a) && !printed(&b) {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "an agent logs the initialize"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let on_a = printed(&a);
    let (mut holder, _other) = if on_a { (a, b) } else { (b, a) };
    holder.proc.signal("TERM");
    holder.proc.wait_exit(Duration::from_secs(15)).await;

    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let answer = client.fetch(request("POST", &post_url, list)).await;
    assert_eq!(answer.status, 404, "{}", answer.text());
    assert_eq!(
        answer.json()["error"],
        "unknown_session",
        "{}",
        answer.text()
    );
    // The stream ends, so the legacy client starts again.
    assert!(
        !read_legacy(&mut stream, &mut text, "never sent").await,
        "the stream ends"
    );
    // A new legacy session works on the remaining replica.
    let v = e2e::python::run_json(
        "mcp_legacy_sse_client.py",
        &[
            relay.route_url("db").into(),
            token.clone().into(),
            relay.ca().into(),
        ],
    )
    .await;
    assert_eq!(v["read"]["structured"]["rows"][0]["n"], 12, "{v}");
}
