//! The relay reads JSON-RPC: malformed and oversized bodies are refused before
//! anything reaches the laptop, `Mcp-Method`/`Mcp-Name` must match the body,
//! and every message lands in the audit trail with what it really does.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};
use http::Request;

struct Setup {
    relay: RelayProc,
    _agent: AgentProc,
    up: Upstream,
    token: String,
    client: HttpsClient,
}

async fn setup(extra: &[&str]) -> Setup {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(extra).await;
    // The test upstream stands in for a local MCP server over HTTP: every
    // POST is JSON-RPC (no --plain-http), which the relay and agent decide.
    let agent = AgentProc::start_upstream(
        &relay,
        &relay.token("alice@x", false),
        "demo",
        &["--http", &format!("{}/echo", up.url())],
        "auto",
    )
    .await;
    let token = relay.token("alice@x", true);
    let client = HttpsClient::new(&relay.ca(), false);
    Setup {
        relay,
        _agent: agent,
        up,
        token,
        client,
    }
}

impl Setup {
    async fn post(&self, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> e2e::client::Answer {
        let mut req = Request::builder()
            .method("POST")
            .uri(self.relay.route_url("demo"))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.client
            .fetch(req.body(e2e::client::full_body(body)).expect("req"))
            .await
    }

    /// The relay's audit trail as JSON values.
    async fn audit(&self, want: usize) -> Vec<serde_json::Value> {
        // Events are written when each response ends; give the writer a moment.
        for _ in 0..100 {
            let (code, out, err) = self.relay.admin(&["audit", "--json"]);
            assert_eq!(code, 0, "{err}");
            let events: Vec<serde_json::Value> = out
                .lines()
                .map(|l| serde_json::from_str(l).expect("json line"))
                .collect();
            if events.len() >= want {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {want} audit events");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_refused_and_nothing_reaches_the_laptop() {
    let s = setup(&[]).await;
    let before = s.up.hits.load(Ordering::Relaxed);
    for (body, code) in [
        (&b"{not json"[..], -32700),
        (&b"[]"[..], -32600),
        (&br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#[..], -32600),
        (
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#[..],
            -32602,
        ),
        (
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#
                [..],
            -32600,
        ),
    ] {
        let a = s.post(Bytes::from_static(body), &[]).await;
        assert_eq!(a.status, 400, "{}", a.text());
        assert_eq!(
            a.json()["error"]["code"],
            code,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(
        s.up.hits.load(Ordering::Relaxed),
        before,
        "a refused body reached the local server"
    );
    // And a good message still goes through.
    let a = s
        .post(&br#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#[..], &[])
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413() {
    let s = setup(&["--max-body", "1024"]).await;
    let before = s.up.hits.load(Ordering::Relaxed);
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(2000)
    );
    let a = s.post(big, &[]).await;
    assert_eq!(a.status, 413, "{}", a.text());
    assert_eq!(a.json()["error"]["code"], -32600);
    assert_eq!(s.up.hits.load(Ordering::Relaxed), before);
    let a = s
        .post(&br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#[..], &[])
        .await;
    assert_eq!(a.status, 200, "the relay keeps serving: {}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_method_and_name_headers_must_match_the_body() {
    let s = setup(&[]).await;
    let call = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_query","arguments":{"query":"SELECT 1"}}}"#;
    let ok = s
        .post(
            &call[..],
            &[("mcp-method", "tools/call"), ("mcp-name", "read_query")],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let before = s.up.hits.load(Ordering::Relaxed);
    for headers in [
        [("mcp-method", "tools/call"), ("mcp-name", "write_query")],
        [("mcp-method", "tools/list"), ("mcp-name", "read_query")],
    ] {
        let a = s.post(&call[..], &headers).await;
        assert_eq!(a.status, 400, "{headers:?}: {}", a.text());
        assert_eq!(a.json()["error"]["code"], -32020);
    }
    assert_eq!(
        s.up.hits.load(Ordering::Relaxed),
        before,
        "a mismatched message reached the local server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_audited_with_what_its_sql_does() {
    let s = setup(&[]).await;
    // A tool *named* read_query whose SQL deletes.
    let sneaky = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_query","arguments":{"query":"WITH x AS (SELECT 1) DELETE FROM customers"}}}"#;
    assert_eq!(s.post(&sneaky[..], &[]).await.status, 200);
    // A batch: one event per message. (Not a list request: the relay would
    // refuse the echo as an answer without the list, see tool_filter.rs.)
    let batch = br#"[{"jsonrpc":"2.0","id":2,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#;
    assert_eq!(s.post(&batch[..], &[]).await.status, 200);
    // A refused request is audited too.
    let anon = s.client.get(&s.relay.route_url("demo"), None).await;
    assert_eq!(anon.status, 401);

    let events = s.audit(4).await;
    let call = events
        .iter()
        .find(|e| e["target"] == "read_query")
        .expect("tool call audited");
    assert_eq!(call["method"], "tools/call");
    assert_eq!(call["decision"], "allow");
    assert_eq!(call["identity"], "alice@x");
    assert_eq!(call["route"], "demo");
    assert_eq!(call["status"], 200);
    assert_eq!(call["sql"]["read_only"], false);
    assert_eq!(call["sql"]["kinds"][0], "delete");
    assert_eq!(call["sql"]["tables"][0], "customers");
    let args = call["arguments"].as_str().expect("arguments hashed");
    assert!(
        args.starts_with("sha256:") && !args.contains("DELETE"),
        "{args}"
    );
    assert!(call["bytes_out"].as_u64().expect("bytes") > 0);

    let batch_events: Vec<_> = events
        .iter()
        .filter(|e| e["request_id"] == events[1]["request_id"])
        .collect();
    assert_eq!(batch_events.len(), 2, "one event per message of a batch");

    let denied = events
        .iter()
        .find(|e| e["status"] == 401)
        .expect("401 audited");
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["policy"][0], "authentication");

    let log =
        std::fs::read_to_string(s.relay.state.path().join("audit.jsonl")).expect("audit file");
    assert!(!log.contains(&s.token), "the audit never holds a token");

    // The query command filters.
    let (code, out, _) = s.relay.admin(&["audit", "--decision", "deny"]);
    assert_eq!(code, 0);
    assert!(out.lines().count() == 2 && out.contains("deny"), "{out}");
}

fn org_policy() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/policies/org-no-attach.cedar")
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_organisations_policy_denies_per_message_before_the_laptop() {
    let policy = org_policy();
    let s = setup(&["--policy", &policy]).await;
    let before = s.up.hits.load(Ordering::Relaxed);
    let attach = br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"read_query","arguments":{"query":"ATTACH DATABASE '/tmp/x.db' AS x"}}}"#;
    let a = s.post(&attach[..], &[]).await;
    assert_eq!(a.status, 200, "a denial is a JSON-RPC error: {}", a.text());
    let v = a.json();
    assert_eq!(v["id"], 5);
    assert_eq!(v["error"]["code"], -32001);
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(
        msg.contains("org/no-attach"),
        "the denial names its policy: {msg}"
    );
    assert_eq!(
        s.up.hits.load(Ordering::Relaxed),
        before,
        "a denied message reached the laptop"
    );

    // In a batch, one denied message keeps the whole body from the laptop.
    let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_query","arguments":{"query":"SELECT load_extension('x')"}}}]"#;
    let a = s.post(&batch[..], &[]).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json().as_array().map(Vec::len), Some(2), "{}", a.text());
    assert_eq!(s.up.hits.load(Ordering::Relaxed), before);

    // What the policy allows goes through.
    let read = br#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"read_query","arguments":{"query":"SELECT * FROM customers"}}}"#;
    assert_eq!(s.post(&read[..], &[]).await.status, 200);
    assert_eq!(s.up.hits.load(Ordering::Relaxed), before + 1);

    let events = s.audit(4).await;
    let denied = events
        .iter()
        .find(|e| e["decision"] == "deny" && e["sql"]["kinds"][0] == "attach")
        .expect("the denial is audited");
    assert_eq!(denied["policy"][0], "org/no-attach");
    let allowed = events
        .iter()
        .rev()
        .find(|e| e["target"] == "read_query")
        .expect("allowed call audited");
    assert_eq!(allowed["decision"], "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_policy_stops_the_relay_at_start_with_its_line() {
    let dir = e2e::TempDir::new("badpolicy");
    let path = dir.path().join("org.cedar");
    std::fs::write(
        &path,
        "@id(\"x\")\nforbid (principal, action, resource)\nwhen { principal.emial == \"a\" };\n",
    )
    .expect("write");
    let state = dir.path().join("state");
    let out = std::process::Command::new(e2e::procs::bin("relay"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--self-signed",
            "--state-dir",
        ])
        .arg(&state)
        .arg("--policy")
        .arg(&path)
        .output()
        .expect("run relay");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("org.cedar:3"),
        "names the file and line: {err}"
    );
    assert!(err.contains("emial"), "{err}");
}
