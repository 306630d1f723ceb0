//! What a route takes at all. An MCP route (here a local `--http` MCP
//! server) takes POST, GET and DELETE on its own URL and nothing else: other
//! methods, paths below it and dot segments (plain or percent-encoded) are
//! refused at the relay with a precise status, audited, and never reach the
//! laptop. A plain HTTP route takes any method and path but no dot segment,
//! and a peer with a read-only grant only reads it. The relay's session
//! cookie never reaches the laptop, and the laptop cannot set one.
//! (The agent's own check of the same rules, for a relay that forgets, is
//! tested on the gate: agent/src/gate/tests.rs.)

use std::sync::atomic::Ordering;
use std::time::Duration;

use e2e::client::{full_body, Answer};
use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};
use serde_json::Value;

use crate::sharing::{grant_id, logged_in, share};

const OWNER: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

struct Setup {
    relay: RelayProc,
    _mcp: AgentProc,
    _web: AgentProc,
    agent_token: String,
    up: Upstream,
    token: String,
    client: HttpsClient,
}

/// Route `mcp`: the upstream's `/echo` as a local MCP server; route `web`:
/// the upstream as a plain HTTP server.
async fn setup() -> Setup {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(&[]).await;
    let agent_token = relay.token(OWNER, false);
    let mcp = AgentProc::start_upstream(
        &relay,
        &agent_token,
        "mcp",
        &["--http", &format!("{}/echo", up.url())],
        "auto",
    )
    .await;
    let web = AgentProc::start(&relay, &agent_token, "web", &up.url(), "auto").await;
    let token = relay.token(OWNER, true);
    let client = HttpsClient::new(&relay.ca(), false);
    Setup {
        relay,
        _mcp: mcp,
        _web: web,
        agent_token,
        up,
        token,
        client,
    }
}

impl Setup {
    async fn send(&self, method: &str, path: &str, token: &str) -> Answer {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.relay.url()))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            // A Streamable HTTP client's GET (not a legacy SSE stream).
            .header("mcp-protocol-version", "2025-06-18")
            .body(full_body(if method == "HEAD" { "" } else { PING }))
            .expect("request");
        self.client.fetch(req).await
    }

    fn hits(&self) -> u64 {
        self.up.hits.load(Ordering::Relaxed)
    }

    /// The audit event of the request line `http` (e.g. "PUT /mcp/mcp").
    async fn audited(&self, http: &str) -> Value {
        for _ in 0..100 {
            let (code, out, err) = self.relay.admin(&["audit", "--json"]);
            assert_eq!(code, 0, "{err}");
            let found = out
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("json line"))
                .find(|e| e["http"] == http);
            if let Some(e) = found {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no audit event for {http}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_route_takes_only_mcp_and_no_route_takes_a_dot_segment() {
    let s = setup().await;

    // What should work still works: MCP on the MCP route, anything on the
    // plain route.
    let a = s.send("POST", "/mcp/mcp", &s.token).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["path"], "/echo", "the MCP server got the POST");
    for method in ["GET", "DELETE"] {
        let a = s.send(method, "/mcp/mcp", &s.token).await;
        assert_eq!(a.status, 200, "{method}: {}", a.text());
        assert_eq!(a.json()["method"], method);
    }
    let a = s.send("PUT", "/mcp/web/echo/file.txt?v=1", &s.token).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["path"], "/echo/file.txt?v=1");
    let a = s
        .send("GET", "/mcp/web/echo/a.b/.well-known/...", &s.token)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());

    // The exploits: each refused at the relay, audited, and nothing reaches
    // the local server.
    let before = s.hits();
    let cases: &[(&str, &str, u16, &str, &str)] = &[
        ("PUT", "/mcp/mcp", 405, "method_not_allowed", "mcp-method"),
        ("PATCH", "/mcp/mcp", 405, "method_not_allowed", "mcp-method"),
        ("HEAD", "/mcp/mcp", 405, "", "mcp-method"),
        (
            "PROPFIND",
            "/mcp/mcp",
            405,
            "method_not_allowed",
            "mcp-method",
        ),
        (
            "GET",
            "/mcp/mcp/anything",
            404,
            "not_found",
            "path-below-mcp-route",
        ),
        (
            "POST",
            "/mcp/mcp/x/y",
            404,
            "not_found",
            "path-below-mcp-route",
        ),
        (
            "GET",
            "/mcp/mcp/../web/id",
            400,
            "dot_segment",
            "path-dot-segment",
        ),
        (
            "GET",
            "/mcp/mcp/%2e%2e/web/id",
            400,
            "dot_segment",
            "path-dot-segment",
        ),
        (
            "GET",
            "/mcp/web/echo/../../admin",
            400,
            "dot_segment",
            "path-dot-segment",
        ),
        (
            "GET",
            "/mcp/web/echo/%2E%2e/secret",
            400,
            "dot_segment",
            "path-dot-segment",
        ),
        (
            "GET",
            "/mcp/web/echo/.%2e/secret",
            400,
            "dot_segment",
            "path-dot-segment",
        ),
        (
            "GET",
            "/mcp/web/echo/..%2f..%2fsecret",
            400,
            "dot_segment",
            "path-dot-segment",
        ),
        (
            "POST",
            "/mcp/web/./echo",
            400,
            "dot_segment",
            "path-dot-segment",
        ),
        (
            "GET",
            "/mcp/web/echo/..;/admin",
            400,
            "dot_segment",
            "path-dot-segment",
        ),
        (
            "GET",
            "/mcp/web/%252e%252e/x",
            400,
            "dot_segment",
            "path-dot-segment",
        ),
    ];
    for &(method, path, status, code, rule) in cases {
        let a = s.send(method, path, &s.token).await;
        assert_eq!(a.status.as_u16(), status, "{method} {path}: {}", a.text());
        if !code.is_empty() {
            let v = a.json();
            assert_eq!(v["error"], code, "{method} {path}: {v}");
            assert!(
                v["message"].as_str().is_some_and(|m| m.contains("route '")),
                "{v}"
            );
        }
        if status == 405 {
            assert_eq!(a.headers["allow"], "GET, POST, DELETE");
        }
        let e = s.audited(&format!("{method} {path}")).await;
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["policy"][0], rule, "{e}");
        assert_eq!(e["identity"], OWNER, "{e}");
        assert_eq!(
            e["route"],
            path.split('/').nth(2).unwrap_or_default(),
            "{e}"
        );
    }
    assert_eq!(s.hits(), before, "no refused request reached the laptop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_grant_only_reads_a_plain_route() {
    let s = setup().await;
    let bob = s.relay.token(BOB, true);
    // Nobody but Alice yet.
    let a = s.send("GET", "/mcp/web/echo", &bob).await;
    assert_eq!(a.status, 403, "{}", a.text());

    let alice = logged_in(&s.relay, OWNER, &s.agent_token);
    let (code, out, err) = share(&alice, &["web", "--with", BOB, "--read-only"]).await;
    assert_eq!(code, 0, "{err}");
    let grant = grant_id(&out);

    let a = s.send("GET", "/mcp/web/echo/doc", &bob).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["method"], "GET");
    let before = s.hits();
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let path = format!("/mcp/web/echo/{method}");
        let a = s.send(method, &path, &bob).await;
        assert_eq!(a.status, 403, "{method}: {}", a.text());
        let v = a.json();
        assert_eq!(v["error"], "read_only", "{v}");
        let e = s.audited(&format!("{method} {path}")).await;
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["policy"][0], "read-only-method", "{e}");
        assert_eq!(e["identity"], BOB, "{e}");
    }
    assert_eq!(s.hits(), before, "no write reached the laptop");
    // Alice herself is not limited by her grant to Bob.
    let a = s.send("PUT", "/mcp/web/echo/mine", &s.token).await;
    assert_eq!(a.status, 200, "{}", a.text());

    // A grant that is not read-only lets Bob write.
    let (code, _, err) = share(&alice, &["--revoke", &grant]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = share(&alice, &["web", "--with", BOB]).await;
    assert_eq!(code, 0, "{err}");
    let a = s.send("PUT", "/mcp/web/echo/bob", &bob).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["method"], "PUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_never_cross_the_tunnel_either_way() {
    let s = setup().await;
    for http2 in [false, true] {
        let client = HttpsClient::new(&s.relay.ca(), http2);
        let req = http::Request::builder()
            .method("GET")
            .uri(format!("{}/cookie", s.relay.route_url("web")))
            .header("authorization", format!("Bearer {}", s.token))
            .header(
                "cookie",
                "__Host-drawbridge_session=the-relays-own; other=1",
            )
            .body(full_body(""))
            .expect("request");
        let a = client.fetch(req).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.headers["x-upstream"], "u", "the local server answered");
        assert_eq!(a.json()["cookie"], Value::Null, "the laptop got a cookie");
        assert!(
            a.headers.get("set-cookie").is_none(),
            "the laptop set a cookie on the relay's origin: {:?}",
            a.headers.get("set-cookie")
        );
    }
}

/// The relay tells the agent which of its policies allowed a request
/// (`drawbridge-relay-rules`, for the owner's inspector): a client cannot
/// forge it, and the local server never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relays_rules_header_is_neither_forged_nor_passed_on() {
    let s = setup().await;
    let client = HttpsClient::new(&s.relay.ca(), false);
    let req = http::Request::builder()
        .method("GET")
        .uri(format!("{}/echo/doc", s.relay.route_url("web")))
        .header("authorization", format!("Bearer {}", s.token))
        .header("drawbridge-relay-rules", "forged-by-the-client")
        .body(full_body(""))
        .expect("request");
    let a = client.fetch(req).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let echoed = a.json();
    let headers = echoed["headers"].as_object().expect("echoed headers");
    assert!(
        !headers.contains_key("drawbridge-relay-rules"),
        "the local server saw the header: {headers:?}"
    );
    assert_eq!(echoed["path"], "/echo/doc", "{echoed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_scope_token_only_reads_a_plain_route() {
    let s = setup().await;
    e2e::browser::add_user(&s.relay, OWNER, "correct horse battery");
    let read = e2e::browser::oauth_access_token_scoped(
        &s.relay,
        OWNER,
        "correct horse battery",
        "web",
        "mcp:read",
    )
    .await;
    let a = s.send("GET", "/mcp/web/echo/doc", &read).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let before = s.hits();
    for method in ["POST", "PUT", "DELETE"] {
        let path = format!("/mcp/web/echo/{method}");
        let a = s.send(method, &path, &read).await;
        assert_eq!(a.status, 403, "{method}: {}", a.text());
        assert!(
            a.headers["www-authenticate"]
                .to_str()
                .is_ok_and(|c| c.contains("insufficient_scope")),
            "{:?}",
            a.headers
        );
        let e = s.audited(&format!("{method} {path}")).await;
        assert_eq!(e["policy"][0], "insufficient-scope", "{e}");
    }
    assert_eq!(s.hits(), before, "no write reached the laptop");
}
