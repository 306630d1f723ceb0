//! A route served by a protocol version 2 agent, shared with `agent share`.
//!
//! A version 2 agent knows no grants: the relay sends it exchange heads
//! without them and it decides with the owner's policy alone. So for a
//! grantee everything is decided at the relay: the grantee gets exactly what
//! was granted, and what was not granted never reaches the laptop. The agent
//! here is the test itself, speaking version 2 by hand over QUIC: it records
//! every exchange it is sent and answers like a small MCP server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::client::{full_body, Answer};
use e2e::{HttpsClient, RelayProc};
use protocol::{
    Control, FrameLimit, Hello, HelloReply, ResponseHead, RouteOffer, StreamOpen, UpstreamKind,
    ALPN,
};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tunnel::quic::QuicSettings;
use tunnel::TunnelConnection;

use crate::sharing::{grant_id, logged_in, share};

const OWNER: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";

/// What the version 2 agent was sent: each exchange's head and its
/// JSON-RPC body.
/// The subject of each exchange head and the JSON-RPC message it carried.
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

struct V2Agent {
    seen: Seen,
    _endpoint: quinn::Endpoint,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for V2Agent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl V2Agent {
    /// Connects as `OWNER` over QUIC, says a version 2 hello offering MCP
    /// route `db` (no policy of its own: the relay's default, owner only),
    /// and serves exchanges.
    async fn start(relay: &RelayProc) -> V2Agent {
        let settings = QuicSettings {
            max_incoming_streams: 8,
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
            initial_rtt: Duration::from_millis(100),
        };
        let tls = tunnel::tls::client_config(Some(&relay.ca()), &[ALPN]).expect("tunnel TLS");
        let (endpoint, _) =
            tunnel::quic::client_endpoint(relay.addr, tls, &settings).expect("QUIC endpoint");
        let quic = endpoint
            .connect(relay.addr, "localhost")
            .expect("QUIC connect parameters")
            .await
            .expect("QUIC handshake");
        let conn = TunnelConnection::Quic(quic);
        let hello = Hello {
            version: 2,
            credential: relay.token(OWNER, false),
            agent_version: "v2-test".into(),
            instance_id: [2; 16],
            routes: vec![RouteOffer {
                name: "db".into(),
                kind: UpstreamKind::Http,
                policy: None,
                accept_tool_changes: false,
            }],
        };
        let (mut control_send, mut control_recv) = conn.open_bi().await.expect("control stream");
        protocol::write_frame("hello", &mut control_send, &hello, FrameLimit::CONTROL)
            .await
            .expect("hello");
        let reply: HelloReply =
            protocol::read_frame("hello reply", &mut control_recv, FrameLimit::CONTROL)
                .await
                .expect("hello reply");
        let HelloReply::Welcome(welcome) = reply else {
            panic!("the version 2 hello was refused: {reply:?}");
        };
        assert_eq!(welcome.version, 2, "{welcome:?}");
        assert_eq!(welcome.owner, OWNER);

        // Keep-alive: ping every second, read the pongs.
        let pings = tokio::spawn(async move {
            for nonce in 0.. {
                let ping = Control::Ping { nonce };
                if protocol::write_frame("ping", &mut control_send, &ping, FrameLimit::CONTROL)
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let pongs = tokio::spawn(async move {
            while protocol::read_frame::<Control, _>("pong", &mut control_recv, FrameLimit::CONTROL)
                .await
                .is_ok()
            {}
        });
        let seen: Seen = Arc::default();
        let record = seen.clone();
        let exchanges = tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let payload =
                    protocol::frame::read_payload("exchange", &mut recv, FrameLimit::HEAD)
                        .await
                        .expect("exchange head");
                // A version 2 head: not the current version's…
                assert!(
                    protocol::frame::decode_payload::<StreamOpen>("current head", &payload)
                        .is_err(),
                    "a current head was sent to a version 2 agent"
                );
                // …but exactly the shape version 2 decodes.
                let crate::hostile::OldStreamOpen::Exchange(head) =
                    protocol::frame::decode_payload::<
                        crate::hostile::OldStreamOpen<crate::hostile::HeadV2>,
                    >("v2 head", &payload)
                    .expect("v2 head");
                let mut body = Vec::new();
                recv.read_to_end(&mut body).await.expect("request body");
                let message: Value = serde_json::from_slice(&body).expect("JSON-RPC body");
                let answer = answer(&message);
                record
                    .lock()
                    .expect("seen")
                    .push((head.identity.subject, message));
                let response = ResponseHead {
                    status: if answer.is_null() { 202 } else { 200 },
                    headers: vec![protocol::Header {
                        name: "content-type".into(),
                        value: b"application/json".to_vec(),
                    }],
                };
                protocol::write_frame("response", &mut send, &response, FrameLimit::HEAD)
                    .await
                    .expect("response head");
                if !answer.is_null() {
                    send.write_all(answer.to_string().as_bytes())
                        .await
                        .expect("response body");
                }
                send.shutdown().await.expect("finish");
            }
        });
        V2Agent {
            seen,
            _endpoint: endpoint,
            tasks: vec![pings, pongs, exchanges],
        }
    }

    /// The (subject, method, tool) of every exchange so far.
    fn seen(&self) -> Vec<(String, String, Option<String>)> {
        self.seen
            .lock()
            .expect("seen")
            .iter()
            .map(|(subject, m)| {
                (
                    subject.clone(),
                    m["method"].as_str().unwrap_or_default().to_owned(),
                    m["params"]["name"].as_str().map(str::to_owned),
                )
            })
            .collect()
    }
}

/// A small MCP server's answer (`null`: a notification, answered 202).
fn answer(m: &Value) -> Value {
    let Some(id) = m.get("id") else {
        return Value::Null;
    };
    let result = match m["method"].as_str() {
        Some("initialize") => json!({"protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}}, "serverInfo": {"name": "v2", "version": "1"}}),
        Some("tools/list") => json!({"tools": [
            {"name": "read_query", "inputSchema": {"type": "object"}},
            {"name": "write_query", "inputSchema": {"type": "object"}},
            {"name": "list_tables", "inputSchema": {"type": "object"}}]}),
        Some("tools/call") => json!({"content": [{"type": "text",
            "text": format!("ran {}", m["params"]["name"])}]}),
        _ => json!({}),
    };
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

async fn post(relay: &RelayProc, token: &str, body: Value) -> Answer {
    let req = http::Request::builder()
        .method("POST")
        .uri(relay.route_url("db"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(full_body(body.to_string()))
        .expect("request");
    HttpsClient::new(&relay.ca(), false).fetch(req).await
}

fn call(tool: &str, query: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": tool, "arguments": {"query": query}}})
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "v2-sharing-test", "version": "1"}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_route_is_shared_exactly_as_granted_decided_at_the_relay() {
    let relay = RelayProc::start(&[]).await;
    let agent = V2Agent::start(&relay).await;
    let alice = logged_in(&relay, OWNER, &relay.token(OWNER, false));
    let bob = relay.token(BOB, true);
    let carol = relay.token(CAROL, true);

    // Before any grant, Bob is refused at the relay.
    let a = post(&relay, &bob, initialize()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["error"]["code"], -32001, "{}", a.text());
    assert!(agent.seen().is_empty(), "{:?}", agent.seen());

    let (code, out, err) = share(
        &alice,
        &["db", "--with", BOB, "--tools", "read_query", "--read-only"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let grant = grant_id(&out);

    // Bob: the session, the list (filtered to the grant) and reading SQL.
    let a = post(&relay, &bob, initialize()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.json()["result"]["serverInfo"]["name"],
        "v2",
        "{}",
        a.text()
    );
    let a = post(
        &relay,
        &bob,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.json()["result"]["tools"],
        json!([{"name": "read_query", "inputSchema": {"type": "object"}}]),
        "{}",
        a.text()
    );
    let a = post(&relay, &bob, call("read_query", "SELECT 1")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.json()["result"]["content"][0]["text"],
        "ran \"read_query\""
    );

    // Not granted: writing SQL, another tool, a writing tool; refused at the
    // relay.
    let a = post(&relay, &bob, call("read_query", "DELETE FROM orders")).await;
    assert_eq!(a.json()["error"]["code"], -32001, "{}", a.text());
    let a = post(&relay, &bob, call("list_tables", "")).await;
    assert_eq!(a.json()["error"]["code"], -32602, "{}", a.text());
    let a = post(&relay, &bob, call("write_query", "DELETE FROM orders")).await;
    assert_eq!(a.json()["error"]["code"], -32602, "{}", a.text());

    // Carol was granted nothing.
    let a = post(&relay, &carol, initialize()).await;
    assert_eq!(a.json()["error"]["code"], -32001, "{}", a.text());

    // Only what was granted reached the laptop.
    let bob_s = BOB.to_owned();
    assert_eq!(
        agent.seen(),
        vec![
            (bob_s.clone(), "initialize".into(), None),
            (bob_s.clone(), "tools/list".into(), None),
            (
                bob_s.clone(),
                "tools/call".into(),
                Some("read_query".into())
            ),
        ]
    );

    // Revoked: Bob's next call is refused at the relay.
    let (code, _, err) = share(&alice, &["--revoke", &grant]).await;
    assert_eq!(code, 0, "{err}");
    let a = post(&relay, &bob, call("read_query", "SELECT 1")).await;
    assert!(
        a.json()["error"]["code"] == -32001 || a.json()["error"]["code"] == -32602,
        "{}",
        a.text()
    );
    assert_eq!(agent.seen().len(), 3, "{:?}", agent.seen());

    // The owner still reaches the laptop.
    let a = post(
        &relay,
        &relay.token(OWNER, true),
        call("write_query", "DELETE FROM t"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(agent.seen().len(), 4, "{:?}", agent.seen());
}
