//! The laptop's window (`agent connect --inspect`): a headless Chromium
//! opens the page with the secret the agent printed, sees a `tools/call`
//! made through the relay appear, and opens its detail with the SQL and what
//! the policy crate reads in it. Without the secret every path answers 401;
//! a POST from another origin is refused; a non-loopback address is refused
//! unless asked for; the ring keeps only `--inspect-history` exchanges.
//! With `--approve`, a write waits for the owner's Approve or Deny (or the
//! timeout). `--view tui` draws the live list in a (pseudo-)terminal.

use std::time::Duration;

use bytes::Bytes;
use e2e::chromium::Chromium;
use e2e::loopback_site::LoopbackSite;
use e2e::mcp::{self, McpClient};
use e2e::{AgentProc, RelayProc, TempDir};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use rmcp::model::{CallToolRequestParams, JsonObject};
use serde_json::{json, Value};

const OWNER: &str = "alice@example.com";

/// A relay, and an agent serving route `db` from a fresh SQLite file with
/// `--inspect 127.0.0.1:0` and `extra`.
struct Setup {
    relay: RelayProc,
    agent: AgentProc,
    client_token: String,
    /// `http://127.0.0.1:PORT`.
    base: String,
    secret: String,
    dir: TempDir,
}

async fn setup(extra: &[&str]) -> Setup {
    let dir = TempDir::new("inspector");
    let db = dir.path().join("demo.db").display().to_string();
    let relay = RelayProc::start(&[]).await;
    let agent_token = relay.token(OWNER, false);
    let client_token = relay.token(OWNER, true);
    let mut flags = vec!["--inspect", "127.0.0.1:0"];
    flags.extend_from_slice(extra);
    let mut agent = AgentProc::spawn_upstream(
        &relay,
        &agent_token,
        "db",
        &["--sqlite", &db],
        "auto",
        &flags,
    );
    let line = agent
        .proc
        .wait_stdout("inspector: ", Duration::from_secs(30))
        .await;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("the inspector's URL")
        .to_owned();
    let (base, secret) = url.split_once("/?token=").expect("URL with token");
    assert!(base.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(secret.len(), 64, "a 256-bit secret in hex: {secret}");
    agent.wait_live().await;
    Setup {
        relay,
        client_token,
        base: base.to_owned(),
        secret: secret.to_owned(),
        agent,
        dir,
    }
}

impl Setup {
    async fn client(&self) -> McpClient {
        mcp::connect(
            &self.relay.route_url("db"),
            &self.relay.ca(),
            &self.client_token,
        )
        .await
    }

    fn bearer(&self) -> (&'static str, String) {
        ("authorization", format!("Bearer {}", self.secret))
    }

    /// `GET /api/exchanges?query` with the bearer secret.
    async fn exchanges(&self, query: &str) -> Vec<Value> {
        let (status, body) = http(
            "GET",
            &format!("{}/api/exchanges?{query}", self.base),
            &[self.bearer()],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        v["exchanges"].as_array().expect("exchanges").clone()
    }
}

/// A plain HTTP request to the inspector: (status, body).
async fn http(method: &str, url: &str, headers: &[(&str, String)]) -> (u16, String) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = http::Request::builder().method(method).uri(url);
    for (n, v) in headers {
        req = req.header(*n, v);
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("inspector answers in time")
        .expect("inspector reachable");
    let status = resp.status().as_u16();
    if resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"text/event-stream")
    {
        return (status, String::new());
    }
    let csp = resp
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "every answer carries the strict CSP: {csp:?}"
    );
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn call(client: &McpClient, tool: &str, args: Value) {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    let args: JsonObject = args;
    let r = client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert_eq!(r.is_error, Some(false), "{r:?}");
}

/// Saves the screenshot in the test's directory and, when
/// DRAWBRIDGE_SCREENSHOT_DIR is set, there too (the README's picture:
/// `DRAWBRIDGE_SCREENSHOT_DIR=$PWD/docs`).
fn save_screenshot(dir: &TempDir, name: &str, png: &[u8]) {
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = dir.path().join(name);
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
    if let Some(out) = std::env::var_os("DRAWBRIDGE_SCREENSHOT_DIR") {
        let out = std::path::Path::new(&out).join(name);
        std::fs::copy(&path, &out).expect("copy screenshot");
        eprintln!("screenshot copied to {}", out.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_page_shows_a_tool_call_with_its_sql() {
    let s = setup(&[]).await;

    // Without the secret: 401 on every path, for every method.
    for path in [
        "/",
        "/?token=wrong",
        "/app.js",
        "/app.css",
        "/api/session",
        "/api/exchanges",
        "/api/exchanges/1",
        "/api/events",
        "/nothing/here",
    ] {
        let (status, body) = http("GET", &format!("{}{path}", s.base), &[]).await;
        assert_eq!(status, 401, "GET {path}: {body}");
    }
    let wrong = [("authorization", "Bearer 00".to_owned())];
    assert_eq!(
        http("GET", &format!("{}/api/exchanges", s.base), &wrong)
            .await
            .0,
        401
    );
    assert_eq!(
        http("POST", &format!("{}/api/clear", s.base), &[]).await.0,
        401
    );
    // Another Host (DNS rebinding) is not answered at all.
    let rebound = [("host", "evil.example".to_owned()), s.bearer()];
    assert_eq!(
        http("GET", &format!("{}/api/exchanges", s.base), &rebound)
            .await
            .0,
        421
    );

    // The owner opens the printed URL: the token becomes a cookie and leaves
    // the address bar; the page goes live.
    let browser = Chromium::start_scripted().await;
    browser
        .goto(&format!("{}/?token={}", s.base, s.secret))
        .await;
    let at = browser.wait_for_url("the page", |u| u.path() == "/").await;
    assert!(at.query().is_none(), "the token left the address bar: {at}");
    browser.wait_for_title("Drawbridge inspector").await;
    browser.wait_for_text("live").await;

    // A tool call through the relay appears in the list as it happens.
    let client = s.client().await;
    let sql = "SELECT name, email FROM customers WHERE id <= 3 ORDER BY id";
    call(&client, "read_query", json!({ "query": sql })).await;
    let text = browser.wait_for_text("read_query").await;
    assert!(text.contains(OWNER), "the caller is shown: {text}");
    assert!(text.contains("allow"), "the decision is shown: {text}");

    // Its detail: the SQL with its statement kinds and tables, the rule
    // that decided on the laptop, the answer.
    let rows = s.exchanges("tool=read_query").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let id = rows[0]["id"].as_u64().expect("id");
    browser.click(&format!("tr[data-id=\"{id}\"]")).await;
    let text = browser.wait_for_text(sql).await;
    assert!(text.contains("statements: select"), "{text}");
    assert!(text.contains("tables: customers"), "{text}");
    assert!(text.contains("reads only"), "{text}");
    assert!(text.contains("Laptop decided"), "{text}");
    assert!(text.contains("Relay decided"), "{text}");
    assert!(
        !text.contains("its rules are in the relay's audit"),
        "{text}"
    );
    assert!(text.contains("alice@example.com"), "{text}");
    let png = browser.screenshot().await;
    save_screenshot(&s.dir, "inspector.png", &png);

    // The same through the API, for scripts.
    let (status, body) = http(
        "GET",
        &format!("{}/api/exchanges/{id}", s.base),
        &[s.bearer()],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let d: Value = serde_json::from_str(&body).expect("detail JSON");
    assert_eq!(d["tool"], "read_query");
    assert_eq!(d["caller"], OWNER);
    assert_eq!(d["decision"], "allow");
    assert_eq!(d["status"], 200);
    assert_eq!(d["messages"][0]["sql"], sql);
    assert_eq!(
        d["messages"][0]["sql_facts"]["tables"],
        json!(["customers"])
    );
    assert_eq!(
        d["messages"][0]["sql_facts"]["statements"],
        json!(["select"])
    );
    assert_eq!(d["laptop"]["allowed"], true);
    assert!(
        !d["laptop"]["rules"].as_array().expect("rules").is_empty(),
        "{d}"
    );
    // And the relay's policies that let it through, as the relay told them.
    assert_eq!(d["relay"]["allowed"], true, "{d}");
    assert_eq!(d["relay"]["rules"], json!(["owner"]), "{d}");
    assert!(
        d["response"]["text"]
            .as_str()
            .expect("text")
            .contains("Ada Lovelace"),
        "{d}"
    );
    assert!(d["timings"]["total_ms"].as_f64().expect("total") > 0.0);
    // Filters.
    assert!(s.exchanges("decision=deny").await.is_empty());
    assert!(!s.exchanges("caller=alice").await.is_empty());
    assert!(s.exchanges("caller=bob").await.is_empty());

    // A page on another origin posts to the inspector: the browser sends
    // the cookie (same site: only the port differs), but not the CSRF
    // token, and says where it comes from: refused, nothing cleared.
    let site = LoopbackSite::start().await;
    site.serve(
        "/attack",
        &format!(
            "<!doctype html><title>other site</title><form method=post action=\"{}/api/clear\"><button>Send</button></form>",
            s.base
        ),
    );
    browser.goto(&site.url("/attack")).await;
    browser.click_button("Send").await;
    let text = browser.wait_for_text("csrf").await;
    assert!(text.contains("CSRF token"), "{text}");
    assert!(!s.exchanges("").await.is_empty(), "nothing was cleared");
    // A cookie without the CSRF token is refused too; with it (from
    // /api/session, as the page does) the change is made.
    let cookie = (
        "cookie",
        format!(
            "drawbridge_inspector_{}={}",
            s.base.rsplit(':').next().expect("port"),
            s.secret
        ),
    );
    let (status, _) = http(
        "POST",
        &format!("{}/api/clear", s.base),
        std::slice::from_ref(&cookie),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = http(
        "GET",
        &format!("{}/api/session", s.base),
        std::slice::from_ref(&cookie),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let session: Value = serde_json::from_str(&body).expect("session JSON");
    let csrf = session["csrf"].as_str().expect("csrf").to_owned();
    let (status, body) = http(
        "POST",
        &format!("{}/api/clear", s.base),
        &[cookie, ("x-inspector-csrf", csrf)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(s.exchanges("").await.is_empty(), "cleared");

    browser.quit().await;
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_keeps_only_its_history() {
    let s = setup(&["--inspect-history", "3"]).await;
    let client = s.client().await;
    for i in 0..6 {
        call(
            &client,
            "read_query",
            json!({ "query": format!("SELECT {i} AS n") }),
        )
        .await;
    }
    // Exchanges are recorded once answered: wait for the last one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = s.exchanges("").await;
        if rows.first().is_some_and(|r| r["tool"] == "read_query") {
            break rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rows.len(), 3, "only the last 3 are kept: {rows:?}");
    let ids: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().expect("id")).collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1] + 1),
        "newest first: {ids:?}"
    );
    assert!(
        ids[0] >= 7,
        "initialize, initialized and 6 calls came first: {ids:?}"
    );
    let (status, _) = http("GET", &format!("{}/api/exchanges/1", s.base), &[s.bearer()]).await;
    assert_eq!(status, 404, "the oldest are gone");
    let (status, body) = http("GET", &format!("{}/api/session", s.base), &[s.bearer()]).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["history"], 3);
    drop(client);
    drop(s.agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_stays_on_loopback_and_moves_off_a_taken_port() {
    let relay = RelayProc::start(&[]).await;
    let token = relay.token(OWNER, false);
    let dir = TempDir::new("inspector-addr");
    let db = dir.path().join("demo.db").display().to_string();
    // A non-loopback address is refused unless asked for.
    let mut a = AgentProc::spawn_upstream(
        &relay,
        &token,
        "db",
        &["--sqlite", &db],
        "auto",
        &["--inspect", "0.0.0.0:0"],
    );
    let code = a.proc.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(1));
    assert!(
        a.proc.stderr_text().contains("not a loopback address"),
        "{}",
        a.proc.stderr_text()
    );
    // A taken port: the next free one.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut a = AgentProc::spawn_upstream(
        &relay,
        &token,
        "db",
        &["--sqlite", &db],
        "auto",
        &["--inspect", &format!("127.0.0.1:{port}")],
    );
    let line = a
        .proc
        .wait_stdout("inspector: ", Duration::from_secs(30))
        .await;
    let url = line.trim_start_matches("inspector: ");
    let got: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a port in {line}"));
    assert!(got > port && got <= port + 20, "{port} taken, got {got}");
    a.wait_live().await;
    drop(taken);
}

/// `SELECT count(*) FROM orders` through the relay.
async fn order_count(client: &McpClient) -> i64 {
    let Value::Object(args) = json!({"query": "SELECT count(*) AS n FROM orders"}) else {
        unreachable!("an object")
    };
    let r = client
        .call_tool(CallToolRequestParams::new("read_query").with_arguments(args))
        .await
        .expect("read_query");
    r.structured_content.expect("structured")["rows"][0]["n"]
        .as_i64()
        .expect("count")
}

/// Starts `write_query` with `sql` in the background: its result, or the
/// JSON-RPC error's text.
fn write_in_background(
    client: &std::sync::Arc<McpClient>,
    sql: &str,
) -> tokio::task::JoinHandle<Result<(), String>> {
    let client = client.clone();
    let Value::Object(args) = json!({ "query": sql }) else {
        unreachable!("an object")
    };
    tokio::spawn(async move {
        match client
            .call_tool(CallToolRequestParams::new("write_query").with_arguments(args))
            .await
        {
            Ok(r) if r.is_error == Some(false) => Ok(()),
            Ok(r) => Err(format!("tool error: {r:?}")),
            Err(e) => Err(e.to_string()),
        }
    })
}

impl Setup {
    /// Waits until an exchange is pending; returns its id.
    async fn pending(&self) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let rows = self.exchanges("tool=write_query").await;
            if let Some(r) = rows.iter().find(|r| r["decision"] == "pending") {
                return r["id"].as_u64().expect("id");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing pending: {rows:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn detail(&self, id: u64) -> Value {
        let (status, body) = http(
            "GET",
            &format!("{}/api/exchanges/{id}", self.base),
            &[self.bearer()],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    }
}

async fn finished(call: tokio::task::JoinHandle<Result<(), String>>) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("the call ends")
        .expect("task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_approves_or_denies_writes_on_the_page() {
    let s = setup(&["--approve", "writes", "--approve-timeout", "60s"]).await;
    let client = std::sync::Arc::new(s.client().await);
    let before = order_count(&client).await;
    // A read does not wait.
    assert_eq!(order_count(&client).await, before);

    let browser = Chromium::start_scripted().await;
    browser
        .goto(&format!("{}/?token={}", s.base, s.secret))
        .await;
    browser.wait_for_title("Drawbridge inspector").await;
    browser.wait_for_text("live").await;

    // Approved on the page: the write completes.
    let call = write_in_background(&client, "DELETE FROM orders WHERE id = 1");
    let id = s.pending().await;
    browser.wait_for_text("pending").await;
    browser.click(&format!("tr[data-id=\"{id}\"]")).await;
    browser
        .wait_for_text("DELETE FROM orders WHERE id = 1")
        .await;
    save_screenshot(&s.dir, "inspector-approve.png", &browser.screenshot().await);
    browser
        .click(&format!("tr[data-id=\"{id}\"] button.approve"))
        .await;
    finished(call).await.expect("the approved write completes");
    assert_eq!(order_count(&client).await, before - 1);
    let d = s.detail(id).await;
    assert_eq!(d["decision"], "allow", "{d}");
    assert_eq!(d["approval"]["approved"], true, "{d}");
    assert_eq!(d["approval"]["by"], "owner (page)", "{d}");
    assert!(d["rules"].to_string().contains("approved-by-owner"), "{d}");

    // Denied on the page: a JSON-RPC error naming the reason; the database
    // is unchanged.
    let call = write_in_background(&client, "DELETE FROM orders WHERE id = 2");
    let id = s.pending().await;
    browser.wait_for_text("Approve").await;
    browser
        .click(&format!("tr[data-id=\"{id}\"] button.deny-button"))
        .await;
    let err = finished(call).await.expect_err("denied");
    assert!(
        err.contains("the route owner denied this tools/call write_query"),
        "{err}"
    );
    assert_eq!(order_count(&client).await, before - 1, "nothing deleted");
    let d = s.detail(id).await;
    assert_eq!(d["decision"], "deny", "{d}");
    assert_eq!(d["approval"]["by"], "owner (page)", "{d}");
    assert_eq!(d["rules"], json!(["denied-by-owner"]), "{d}");
    browser.click(&format!("tr[data-id=\"{id}\"]")).await;
    browser.wait_for_text("denied by owner (page)").await;

    // A script approves with the bearer secret, for this caller for 10
    // minutes: the caller's next write does not wait.
    let call = write_in_background(&client, "DELETE FROM orders WHERE id = 3");
    let id = s.pending().await;
    let (status, body) = http(
        "POST",
        &format!("{}/api/exchanges/{id}/approve?remember=1", s.base),
        &[s.bearer()],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    finished(call).await.expect("approved by the API");
    // Deciding again: nothing pending.
    let (status, _) = http(
        "POST",
        &format!("{}/api/exchanges/{id}/deny", s.base),
        &[s.bearer()],
    )
    .await;
    assert_eq!(status, 409);
    finished(write_in_background(
        &client,
        "DELETE FROM orders WHERE id = 4",
    ))
    .await
    .expect("remembered: no wait");
    assert_eq!(order_count(&client).await, before - 3);
    let rows = s.exchanges("tool=write_query").await;
    assert_eq!(
        rows[0]["approval"]["by"], "owner (remembered for this caller)",
        "{rows:?}"
    );
    browser.quit().await;
    // The relay's audit records the owner's word on each write, in order.
    let words = relay_approvals(&s, 4).await;
    let who: Vec<&str> = words
        .iter()
        .map(|w| w.split("; at=").next().unwrap_or(""))
        .collect();
    assert_eq!(
        who,
        [
            "approved; by=owner (page)",
            "denied; by=owner (page)",
            "approved; by=owner (api)",
            "approved; by=owner (remembered for this caller)",
        ],
        "{words:?}"
    );
}

/// The `approval` of the relay's audit events of `write_query` calls, once
/// there are `n` of them.
async fn relay_approvals(s: &Setup, n: usize) -> Vec<String> {
    let path = s.relay.state.path().join("audit.jsonl");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let words: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["target"] == "write_query")
            .filter_map(|e| e["approval"].as_str().map(str::to_owned))
            .collect();
        if words.len() >= n || std::time::Instant::now() > deadline {
            return words;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_left_alone_is_denied_after_the_timeout() {
    let s = setup(&["--approve", "writes", "--approve-timeout", "2s"]).await;
    let client = std::sync::Arc::new(s.client().await);
    let before = order_count(&client).await;
    let err = finished(write_in_background(&client, "DELETE FROM orders"))
        .await
        .expect_err("denied after the timeout");
    assert!(
        err.contains("did not approve this tools/call write_query within 2s")
            && err.contains("--approve-timeout"),
        "{err}"
    );
    let words = relay_approvals(&s, 1).await;
    assert!(
        words.len() == 1 && words[0].starts_with("timeout; by=timeout; at="),
        "{words:?}"
    );
    assert_eq!(order_count(&client).await, before, "nothing deleted");
    let rows = s.exchanges("tool=write_query").await;
    assert_eq!(rows[0]["decision"], "deny", "{rows:?}");
    assert_eq!(rows[0]["rules"], json!(["approval-timeout"]), "{rows:?}");
    assert_eq!(rows[0]["approval"]["by"], "timeout", "{rows:?}");
    // The agent's log line says who decided.
    assert!(
        s.agent
            .proc
            .wait_stderr("by=\"timeout\"", Duration::from_secs(10))
            .await,
        "{}",
        s.agent.proc.stderr_text()
    );
}

/// A tmux server of the test's own (its own socket) running one command
/// in a 120x30 terminal; killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(tag: &str, command: &str, env: &[(&str, &str)]) -> Tmux {
        let socket = format!("drawbridge-{tag}-{}", std::process::id());
        let mut args: Vec<String> = ["-L", &socket, "new-session", "-d", "-x", "120", "-y", "30"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (k, v) in env {
            args.push("-e".into());
            args.push(format!("{k}={v}"));
        }
        args.push(command.to_owned());
        let out = std::process::Command::new("tmux")
            .args(&args)
            .output()
            .expect("tmux is installed (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmux { socket }
    }

    /// The terminal's screen, as text.
    fn screen(&self) -> String {
        let out = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (up to 30 s) until the screen shows `needle`; returns it.
    async fn wait_for(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {needle:?} on the screen:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn keys(&self, keys: &str) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", keys])
            .output();
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_view_lists_a_tool_call() {
    let dir = TempDir::new("inspector-tui");
    let relay = RelayProc::start(&[]).await;
    let agent_token = relay.token(OWNER, false);
    let client_token = relay.token(OWNER, true);
    let db = dir.path().join("demo.db");
    let log = dir.path().join("agent.log");
    let command = format!(
        "exec {} connect --relay {} --ca-cert {} --route db --sqlite {} --inspect 127.0.0.1:0 --view tui 2>{}",
        e2e::procs::bin("agent").display(),
        relay.url(),
        relay.ca().display(),
        db.display(),
        log.display()
    );
    let tmux = Tmux::start("tui", &command, &[("DRAWBRIDGE_TOKEN", &agent_token)]);
    tmux.wait_for("route db is live at").await;
    tmux.wait_for("inspector: http://127.0.0.1:").await;
    let client = mcp::connect(&relay.route_url("db"), &relay.ca(), &client_token).await;
    call(&client, "read_query", json!({"query": "SELECT 1 AS one"})).await;
    let screen = tmux.wait_for("tools/call read_query").await;
    assert!(screen.contains("allow (owner)"), "{screen}");
    assert!(screen.contains(OWNER), "{screen}");
    // q stops the agent: the route goes away.
    tmux.keys("q");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("stopping")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "q did not stop the agent: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With stderr on the terminal the view draws on, log lines go to its log
/// pane instead of over it; once the view is gone, to the terminal again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_view_shows_log_lines_in_its_pane() {
    let dir = TempDir::new("inspector-tui-log");
    let relay = RelayProc::start(&[]).await;
    let agent_token = relay.token(OWNER, false);
    let db = dir.path().join("demo.db");
    let command = format!(
        "{} connect --relay {} --ca-cert {} --route db --sqlite {} --view tui; echo agent exited; sleep 60",
        e2e::procs::bin("agent").display(),
        relay.url(),
        relay.ca().display(),
        db.display(),
    );
    let tmux = Tmux::start("tui-log", &command, &[("DRAWBRIDGE_TOKEN", &agent_token)]);
    tmux.wait_for("route db is live at").await;
    // The agent's log line, inside the view's log pane (framed), not over
    // the table.
    let screen = tmux.wait_for("tunnel established").await;
    let pane: Vec<&str> = screen
        .lines()
        .skip_while(|l| !l.contains(" log "))
        .collect();
    assert!(
        pane.iter().any(|l| l.contains("tunnel established")),
        "the log line is not in the log pane: {screen}"
    );
    let exchanges = screen
        .lines()
        .position(|l| l.contains(" exchanges ("))
        .expect("the exchanges table");
    let log_pane = screen
        .lines()
        .position(|l| l.contains(" log "))
        .expect("the log pane");
    assert!(exchanges < log_pane, "{screen}");
    // q: the view is gone, and the agent's last lines reach the terminal.
    tmux.keys("q");
    let screen = tmux.wait_for("agent exited").await;
    assert!(screen.contains("stopping"), "{screen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_page_open_the_terminal_asks() {
    let dir = TempDir::new("inspector-prompt");
    let relay = RelayProc::start(&[]).await;
    let agent_token = relay.token(OWNER, false);
    let client_token = relay.token(OWNER, true);
    let db = dir.path().join("demo.db");
    let log = dir.path().join("agent.log");
    let command = format!(
        "exec {} connect --relay {} --ca-cert {} --route db --sqlite {} --inspect 127.0.0.1:0 --approve writes 2>{}",
        e2e::procs::bin("agent").display(),
        relay.url(),
        relay.ca().display(),
        db.display(),
        log.display()
    );
    let tmux = Tmux::start("prompt", &command, &[("DRAWBRIDGE_TOKEN", &agent_token)]);
    tmux.wait_for("route db is live at").await;
    let client =
        std::sync::Arc::new(mcp::connect(&relay.route_url("db"), &relay.ca(), &client_token).await);
    let before = order_count(&client).await;

    // y approves.
    let call = write_in_background(&client, "DELETE FROM orders WHERE id = 1");
    let screen = tmux.wait_for("approve #").await;
    assert!(
        screen.contains(
            "tools/call write_query by alice@example.com (DELETE FROM orders WHERE id = 1)? [y/n]"
        ),
        "{screen}"
    );
    tmux.keys("y");
    finished(call).await.expect("approved in the terminal");
    assert_eq!(order_count(&client).await, before - 1);
    tmux.wait_for("approved").await;

    // n denies.
    let call = write_in_background(&client, "DELETE FROM orders WHERE id = 2");
    let screen = tmux.wait_for("WHERE id = 2)? [y/n]").await;
    // A request served meanwhile prints its line above the prompt, which is
    // asked again under it (not run into it, nor shifted right).
    let reads = |screen: &str| screen.matches("read_query").count();
    let reads_before = reads(&screen);
    assert_eq!(order_count(&client).await, before - 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let screen = loop {
        let screen = tmux.screen();
        if reads(&screen) > reads_before {
            break screen;
        }
        assert!(tokio::time::Instant::now() < deadline, "{screen}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    let read = lines
        .iter()
        .rposition(|l| l.contains("read_query"))
        .expect("the read's line");
    assert!(
        !lines[read].contains("[y/n]") && !lines[read].starts_with(' '),
        "{screen}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("WHERE id = 2)? [y/n]")),
        "the prompt is not asked again under the line: {screen}"
    );
    tmux.keys("n");
    let err = finished(call).await.expect_err("denied in the terminal");
    assert!(
        err.contains("denied") && err.contains("owner (terminal)"),
        "{err}"
    );
    assert_eq!(order_count(&client).await, before - 1, "nothing deleted");
}
