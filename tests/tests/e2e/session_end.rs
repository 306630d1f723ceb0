//! Ending an MCP session of the built-in SQLite server with DELETE: `200`
//! for a session it knows, `404` for one it does not (an ended or made-up
//! id), never rmcp's `202`. Driven by the TypeScript SDK's
//! `terminateSession` and by hand. (Stdio routes: see stdio.rs.)

use std::time::Duration;

use e2e::client::{full_body, Answer};
use e2e::{AgentProc, HttpsClient, RelayProc, TempDir};
use serde_json::{json, Value};

struct Setup {
    relay: RelayProc,
    _agent: AgentProc,
    token: String,
    http: HttpsClient,
    _dir: TempDir,
}

async fn setup() -> Setup {
    let relay = RelayProc::start(&[]).await;
    let dir = TempDir::new("session-end");
    let db = dir.path().join("demo.db").display().to_string();
    let agent = AgentProc::start_upstream(
        &relay,
        &relay.token("alice@x", false),
        "db",
        &["--sqlite", &db],
        "auto",
    )
    .await;
    let token = relay.token("alice@x", true);
    let http = HttpsClient::new(&relay.ca(), false);
    Setup {
        relay,
        _agent: agent,
        token,
        http,
        _dir: dir,
    }
}

impl Setup {
    async fn send(&self, method: &str, body: &str, session: Option<&str>) -> Answer {
        let mut b = http::Request::builder()
            .method(method)
            .uri(self.relay.route_url("db"))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18");
        if let Some(s) = session {
            b = b.header("mcp-session-id", s);
        }
        self.http
            .fetch(b.body(full_body(body.to_owned())).expect("request"))
            .await
    }

    /// A session by hand: initialize, then notifications/initialized.
    async fn session(&self) -> String {
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "e2e", "version": "1"}}});
        let a = self.send("POST", &init.to_string(), None).await;
        assert_eq!(a.status, 200, "{}", a.text());
        let sid = a
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .expect("a session id")
            .to_owned();
        let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let a = self.send("POST", &done.to_string(), Some(&sid)).await;
        assert_eq!(a.status, 202, "{}", a.text());
        sid
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_sqlite_session_answers_200_and_an_unknown_one_404() {
    let s = setup().await;

    // The TypeScript SDK ends its session; the relay's audit shows what the
    // agent answered it.
    let v = e2e::node::run_json(
        "ts_client.mjs",
        &s.relay.ca(),
        &[
            s.relay.route_url("db").into(),
            s.token.clone().into(),
            "1".into(),
            "--terminate".into(),
        ],
    )
    .await;
    let session = &v["sessions"][0];
    assert_eq!(session["connected"], true, "{v}");
    assert_eq!(session["terminated"], true, "{v}");
    assert!(session["error"].is_null(), "{v}");
    let mut deleted = None;
    for _ in 0..100 {
        let (code, out, err) = s.relay.admin(&["audit", "--json"]);
        assert_eq!(code, 0, "{err}");
        deleted = out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["http"] == "DELETE /mcp/db");
        if deleted.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deleted = deleted.expect("the SDK's DELETE is audited");
    assert_eq!(deleted["status"], 200, "{deleted}");

    // By hand: a known session ends with 200 and an empty body ...
    let sid = s.session().await;
    let a = s.send("DELETE", "", Some(&sid)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.body.is_empty(), "{}", a.text());
    // ... and is then unknown: 404 for DELETE again and for a request in it.
    let a = s.send("DELETE", "", Some(&sid)).await;
    assert_eq!(a.status, 404, "{}", a.text());
    assert_eq!(a.json()["error"]["code"], -32600, "{}", a.text());
    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}).to_string();
    assert_eq!(s.send("POST", &ping, Some(&sid)).await.status, 404);
    // A made-up session: 404.
    let a = s.send("DELETE", "", Some("no-such-session")).await;
    assert_eq!(a.status, 404, "{}", a.text());
    // Other sessions are untouched by all this.
    let other = s.session().await;
    let a = s.send("POST", &ping, Some(&other)).await;
    assert_eq!(a.status, 200, "{}", a.text());
}
