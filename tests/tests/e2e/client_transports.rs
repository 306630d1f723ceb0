//! What the relay speaks to clients besides plain Streamable HTTP: CORS and
//! Origin validation for browsers, keep-alive comments on event streams, and
//! the legacy HTTP+SSE transport (2024-11-05), driven by the Python SDK's
//! real legacy client through relay → agent → the built-in SQLite server.

use std::sync::atomic::Ordering;
use std::time::Duration;

use e2e::client::{full_body, next_message, read_until, Answer, Body};
use e2e::{AgentProc, HttpsClient, RelayProc, TempDir, Upstream};
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};

const OWNER: &str = "alice@example.com";
const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;

/// A relay (with `relay_args`) and an agent serving route `db` from the
/// built-in SQLite server.
async fn sqlite_setup(
    relay_args: &[&str],
    agent_args: &[&str],
) -> (RelayProc, AgentProc, String, TempDir) {
    let dir = TempDir::new("client-transports");
    let db = dir.path().join("demo.db").display().to_string();
    let relay = RelayProc::start(relay_args).await;
    let mut upstream = vec!["--sqlite", db.as_str()];
    upstream.extend_from_slice(agent_args);
    let agent =
        AgentProc::start_upstream(&relay, &relay.token(OWNER, false), "db", &upstream, "auto")
            .await;
    let token = relay.token(OWNER, true);
    (relay, agent, token, dir)
}

/// A relay (with `relay_args`) and an agent serving route `demo` from the
/// scriptable test upstream.
async fn upstream_setup(relay_args: &[&str]) -> (RelayProc, AgentProc, Upstream, String) {
    let upstream = Upstream::start("u1").await;
    let relay = RelayProc::start(relay_args).await;
    let agent = AgentProc::start(
        &relay,
        &relay.token(OWNER, false),
        "demo",
        &upstream.url(),
        "auto",
    )
    .await;
    let token = relay.token(OWNER, true);
    (relay, agent, upstream, token)
}

fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(full_body(body.to_owned())).expect("request")
}

fn header(a: &Answer, name: &str) -> String {
    a.headers
        .get(name)
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_is_answered_without_a_token() {
    let (relay, _agent, _token, _dir) = sqlite_setup(&[], &[]).await;
    let client = HttpsClient::new(&relay.ca(), false);
    // MCP Inspector's origin (loopback, any port), and the relay's own.
    for origin in ["http://localhost:6274".to_owned(), relay.url()] {
        let a = client
            .fetch(request(
                "OPTIONS",
                &relay.route_url("db"),
                &[
                    ("origin", &origin),
                    ("access-control-request-method", "POST"),
                    (
                        "access-control-request-headers",
                        "authorization, content-type, mcp-protocol-version",
                    ),
                ],
                "",
            ))
            .await;
        assert_eq!(a.status, 204, "{origin}: {}", a.text());
        assert_eq!(header(&a, "access-control-allow-origin"), origin);
        assert_eq!(
            header(&a, "access-control-allow-methods"),
            "GET, POST, DELETE, OPTIONS"
        );
        let allowed = header(&a, "access-control-allow-headers").to_ascii_lowercase();
        for h in [
            "authorization",
            "content-type",
            "accept",
            "mcp-protocol-version",
            "mcp-session-id",
            "last-event-id",
            "mcp-method",
            "mcp-name",
        ] {
            assert!(allowed.contains(h), "{h} not in {allowed}");
        }
        assert!(!header(&a, "access-control-max-age").is_empty());
        assert_eq!(header(&a, "vary"), "Origin");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_is_refused_before_anything_is_forwarded() {
    let (relay, _agent, upstream, token) =
        upstream_setup(&["--allow-origin", "https://App.example.com:443"]).await;
    let client = HttpsClient::new(&relay.ca(), false);
    let url = format!("{}/echo", relay.route_url("demo"));
    let bearer = format!("Bearer {token}");
    let post = |origin: Option<&str>, auth: Option<&str>| {
        let mut h = vec![("content-type", "application/json")];
        if let Some(o) = origin {
            h.push(("origin", o));
        }
        if let Some(a) = auth {
            h.push(("authorization", a));
        }
        request("POST", &url, &h, PING)
    };

    // A foreign origin: 403 naming it and the flag that allows it, with a
    // valid token or none, preflight or not; the laptop sees nothing.
    for (method, auth) in [
        ("POST", Some(bearer.as_str())),
        ("POST", None),
        ("OPTIONS", None),
    ] {
        let req = if method == "POST" {
            post(Some("https://evil.example"), auth)
        } else {
            request("OPTIONS", &url, &[("origin", "https://evil.example")], "")
        };
        let a = client.fetch(req).await;
        assert_eq!(a.status, 403, "{method}: {}", a.text());
        let v = a.json();
        assert_eq!(v["error"], "origin_not_allowed");
        let msg = v["message"].as_str().expect("message");
        assert!(msg.contains("https://evil.example"), "{msg}");
        assert!(msg.contains("--allow-origin"), "{msg}");
        assert!(a.headers.get("access-control-allow-origin").is_none());
    }
    // Look-alikes of allowed origins are foreign too.
    for origin in [
        "http://app.example.com",
        "https://app.example.com.evil.example",
        "http://localhost.evil.example",
        "null",
    ] {
        let a = client.fetch(post(Some(origin), Some(&bearer))).await;
        assert_eq!(a.status, 403, "{origin}");
    }
    assert_eq!(
        upstream.hits.load(Ordering::Relaxed),
        0,
        "nothing forwarded"
    );
    // The refusals are audited.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) = relay.admin(&["audit", "--json", "--decision", "deny"]);
        let refused = out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["policy"] == json!(["origin-not-allowed"]))
            .count();
        if refused >= 7 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "origin refusals not audited:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // No Origin (a server-side client): served.
    let a = client.fetch(post(None, Some(&bearer))).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.headers.get("access-control-allow-origin").is_none());
    assert_eq!(upstream.hits.load(Ordering::Relaxed), 1);

    // The --allow-origin origin (normalised) gets its CORS headers on a 401…
    let a = client
        .fetch(post(Some("https://app.example.com"), None))
        .await;
    assert_eq!(a.status, 401);
    assert_eq!(
        header(&a, "access-control-allow-origin"),
        "https://app.example.com"
    );
    let exposed = header(&a, "access-control-expose-headers").to_ascii_lowercase();
    for h in ["www-authenticate", "mcp-session-id", "mcp-protocol-version"] {
        assert!(exposed.contains(h), "{h} not exposed: {exposed}");
    }
    assert!(a.headers.contains_key("www-authenticate"));
    // …on a 200 from the laptop…
    let a = client
        .fetch(post(Some("https://app.example.com"), Some(&bearer)))
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        header(&a, "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert!(header(&a, "access-control-expose-headers").contains("Mcp-Session-Id"));
    assert_eq!(a.json()["headers"]["origin"], "https://app.example.com");
    // …and on an event stream.
    let resp = client
        .send(request(
            "GET",
            &format!("{}/sse", relay.route_url("demo")),
            &[
                ("origin", "http://127.0.0.1:5173"),
                ("authorization", &bearer),
                ("accept", "text/event-stream"),
            ],
            "",
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://127.0.0.1:5173"
    );
    assert_eq!(upstream.hits.load(Ordering::Relaxed), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_event_stream_gets_keep_alive_comments_between_events() {
    let (relay, _agent, upstream, token) = upstream_setup(&["--sse-keepalive", "100ms"]).await;
    let client = HttpsClient::new(&relay.ca(), false);
    let resp = client
        .send(request(
            "GET",
            &format!("{}/sse", relay.route_url("demo")),
            &[
                ("authorization", &format!("Bearer {token}")),
                ("accept", "text/event-stream"),
            ],
            "",
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    let mut body = resp.into_body();
    let mut text = String::new();
    // The upstream holds event k+1 until released: the stream is idle.
    read_until(&mut body, &mut text, "data: event 0\n\n").await;
    read_until(&mut body, &mut text, "data: event 0\n\n: keep-alive\n\n").await;
    upstream.release();
    read_until(&mut body, &mut text, "data: event 1\n\n").await;
    upstream.release();
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.expect("clean end").into_data() {
            text.push_str(&String::from_utf8_lossy(&d));
        }
    }
    // Every block is a whole upstream event or a comment; the events are
    // unchanged and in order.
    let blocks: Vec<&str> = text.split_terminator("\n\n").collect();
    let events: Vec<&str> = blocks
        .iter()
        .copied()
        .filter(|b| *b != ": keep-alive")
        .collect();
    assert_eq!(
        events,
        [
            "id: 0\ndata: event 0",
            "id: 1\ndata: event 1",
            "id: 2\ndata: event 2"
        ],
        "{text:?}"
    );
    assert!(text.ends_with("\n\n"));
}

/// Opens a legacy stream; returns its body and the endpoint it announced.
async fn open_legacy(client: &HttpsClient, url: &str, token: &str) -> (Incoming, String, String) {
    let resp = client
        .send(request(
            "GET",
            url,
            &[
                ("authorization", &format!("Bearer {token}")),
                ("accept", "text/event-stream"),
            ],
            "",
        ))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    let mut body = resp.into_body();
    let mut text = String::new();
    read_until(&mut body, &mut text, "\n\n").await;
    let endpoint = text
        .strip_prefix("event: endpoint\ndata: ")
        .and_then(|t| t.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("not an endpoint event: {text:?}"))
        .to_owned();
    (body, endpoint, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_transport_goes_through_the_gateway_checks() {
    let org_policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/policies/org-no-attach.cedar")
        .display()
        .to_string();
    let (relay, _agent, token, _dir) = sqlite_setup(
        &[
            "--sse-keepalive",
            "100ms",
            "--max-body",
            "2000",
            "--policy",
            &org_policy,
        ],
        &["--allow", "bob@example.com"],
    )
    .await;
    let client = HttpsClient::new(&relay.ca(), false);
    let route = relay.route_url("db");
    let (mut stream, endpoint, _) = open_legacy(&client, &route, &token).await;
    let id = endpoint
        .strip_prefix("/mcp/db?session_id=")
        .unwrap_or_else(|| panic!("endpoint {endpoint:?}"));
    assert_eq!(id.len(), 32, "{id}");
    let post_url = format!("{}{endpoint}", relay.url());
    let bearer = format!("Bearer {token}");
    let post = |body: &str, auth: &str| {
        request(
            "POST",
            &post_url,
            &[
                ("authorization", auth),
                ("content-type", "application/json"),
            ],
            body,
        )
    };

    // initialize: 202 on the POST, the answer on the stream.
    let a = client.fetch(post(INITIALIZE, &bearer)).await;
    assert_eq!(a.status, 202, "{}", a.text());
    let mut text = String::new();
    let init = next_message(&mut stream, &mut text).await;
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["serverInfo"]["name"], "drawbridge-sqlite");
    // The stream idles between answers: keep-alive comments, between events.
    read_until(&mut stream, &mut text, ": keep-alive\n\n").await;
    let a = client
        .fetch(post(
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            &bearer,
        ))
        .await;
    assert_eq!(a.status, 202);
    let a = client
        .fetch(post(
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
            &bearer,
        ))
        .await;
    assert_eq!(a.status, 202);
    let tools = next_message(&mut stream, &mut text).await;
    assert_eq!(tools["id"], 2, "{tools}");
    assert_eq!(tools["result"]["tools"].as_array().map(Vec::len), Some(6));

    // The policy decides each message; a denial is the answer on the stream.
    let a = client
        .fetch(post(
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"read_query","arguments":{"query":"ATTACH DATABASE ':memory:' AS x"}}}"#,
            &bearer,
        ))
        .await;
    assert_eq!(a.status, 202);
    let denied = next_message(&mut stream, &mut text).await;
    assert_eq!(denied["id"], 5, "{denied}");
    assert_eq!(denied["error"]["code"], -32001, "{denied}");
    assert!(denied.to_string().contains("org/no-attach"), "{denied}");

    // The same gateway checks as any POST, answered on the POST itself.
    let a = client.fetch(post("{not json", &bearer)).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"]["code"], -32700);
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":3,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(3000)
    );
    let a = client.fetch(post(&big, &bearer)).await;
    assert_eq!(a.status, 413);
    let a = client.fetch(post(PING, "Bearer nope")).await;
    assert_eq!(a.status, 401);
    // Another identity, though allowed on the route, never reaches the
    // session (nor learns that it exists); it may open its own.
    let bob = relay.token("bob@example.com", true);
    let a = client.fetch(post(PING, &format!("Bearer {bob}"))).await;
    assert_eq!(a.status, 404, "{}", a.text());
    assert_eq!(a.json()["error"], "unknown_session");
    let (bobs, bob_endpoint, _) = open_legacy(&client, &route, &bob).await;
    assert_ne!(bob_endpoint, endpoint);
    drop(bobs);
    // An identity the policy does not allow cannot open a stream.
    let carol = relay.token("carol@example.com", true);
    let a = client
        .fetch(request(
            "GET",
            &route,
            &[
                ("authorization", &format!("Bearer {carol}")),
                ("accept", "text/event-stream"),
            ],
            "",
        ))
        .await;
    assert_eq!(a.status, 403, "{}", a.text());
    // An unknown session, a non-POST, an ambiguous request.
    let a = client
        .fetch(request(
            "POST",
            &format!("{route}?session_id=0123"),
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            PING,
        ))
        .await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["error"], "unknown_session");
    let a = client
        .fetch(request("GET", &post_url, &[("authorization", &bearer)], ""))
        .await;
    assert_eq!(a.status, 405);
    let a = client
        .fetch(request(
            "POST",
            &post_url,
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
                ("mcp-session-id", "abc"),
            ],
            PING,
        ))
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"], "ambiguous_session");
    let a = client
        .fetch(request(
            "POST",
            &post_url,
            &[("authorization", &bearer), ("content-type", "text/plain")],
            PING,
        ))
        .await;
    assert_eq!(a.status, 415);

    // Nothing above broke the session.
    let a = client
        .fetch(post(
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"read_query","arguments":{"query":"SELECT count(*) AS n FROM orders"}}}"#,
            &bearer,
        ))
        .await;
    assert_eq!(a.status, 202);
    let r = next_message(&mut stream, &mut text).await;
    assert_eq!(r["id"], 4, "{r}");
    assert_eq!(r["result"]["structuredContent"]["rows"][0]["n"], 25, "{r}");

    // Streams per identity are bounded.
    let mut more = Vec::new();
    for _ in 1..8 {
        more.push(open_legacy(&client, &route, &token).await.0);
    }
    let a = client
        .fetch(request(
            "GET",
            &route,
            &[("authorization", &bearer), ("accept", "text/event-stream")],
            "",
        ))
        .await;
    assert_eq!(a.status, 429, "{}", a.text());
    assert_eq!(a.json()["error"], "too_many_sessions");
    drop(more);

    // Closing the stream ends the session, and the upstream session with it.
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a = client.fetch(post(PING, &bearer)).await;
        if a.status == 404 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session outlived its stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) = relay.admin(&["audit", "--json"]);
        let closed = out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["policy"] == json!(["legacy-stream-closed"]));
        if let Some(e) = closed {
            assert_eq!(e["http"], "DELETE /mcp/db");
            assert_eq!(e["identity"], OWNER);
            assert!(e["status"].as_u64().is_some_and(|s| s < 300), "{e}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no upstream DELETE audited:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamable_http_get_stream_is_not_taken_for_legacy() {
    let (relay, _agent, upstream, token) = upstream_setup(&[]).await;
    let client = HttpsClient::new(&relay.ca(), false);
    // A GET stream with a session id, or with a protocol version, is
    // Streamable HTTP: forwarded to the laptop as it is.
    for (name, value) in [
        ("mcp-session-id", "s-1"),
        ("mcp-protocol-version", "2025-06-18"),
    ] {
        let a = client
            .fetch(request(
                "GET",
                &format!("{}/echo", relay.route_url("demo")),
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("accept", "text/event-stream"),
                    (name, value),
                ],
                "",
            ))
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["headers"][name], value);
    }
    assert_eq!(upstream.hits.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_legacy_sse_client_uses_the_sqlite_route() {
    let (relay, _agent, token, _dir) = sqlite_setup(&[], &[]).await;
    let v = e2e::python::run_json(
        "mcp_legacy_sse_client.py",
        &[
            relay.route_url("db").into(),
            token.clone().into(),
            relay.ca().into(),
        ],
    )
    .await;
    eprintln!("legacy client saw: {v}");
    assert!(v["protocol_version"].is_string(), "{v}");
    assert_eq!(v["session_ids"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(
        v["tools"],
        json!([
            "append_insight",
            "create_table",
            "describe_table",
            "list_tables",
            "read_query",
            "write_query"
        ])
    );
    assert_eq!(v["read"]["is_error"], false, "{v}");
    assert_eq!(v["read"]["structured"]["rows"][0]["n"], 12, "{v}");
    assert_eq!(v["sneaky_is_error"], true, "{v}");
    // Every message was audited as it went through the gateway.
    let (_, audit, _) = relay.admin(&["audit", "--json"]);
    let methods: Vec<String> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["http"].as_str().is_some_and(|h| h.starts_with("POST")))
        .filter_map(|e| e["method"].as_str().map(str::to_owned))
        .collect();
    for m in [
        "initialize",
        "notifications/initialized",
        "tools/list",
        "tools/call",
    ] {
        assert!(
            methods.iter().any(|x| x == m),
            "{m} not audited: {methods:?}"
        );
    }
}

#[test]
fn a_malformed_allow_origin_stops_the_relay_with_the_reason() {
    let state = TempDir::new("bad-origin");
    let out = std::process::Command::new(e2e::procs::bin("relay"))
        .args([
            "serve",
            "--self-signed",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(state.path())
        .args(["--allow-origin", "app.example.com"])
        .output()
        .expect("run relay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--allow-origin \"app.example.com\" is not an origin"),
        "{stderr}"
    );
}
