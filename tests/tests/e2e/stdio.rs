//! The stdio bridge (`agent connect -- CMD ARGS...`) through the real relay
//! and agent: the reference `mcp-server-sqlite` (PyPI, its own venv with
//! `mcp<2`, installed by scripts/test.sh into .venv-sqlite) driven by rmcp
//! and by the Python `mcp` client, sessions and their children, DELETE, a
//! crashed child, and a misbehaving one (tests/python/stdio_server.py).

use std::path::PathBuf;
use std::time::Duration;

use e2e::client::{full_body, Answer};
use e2e::mcp::{self, McpClient};
use e2e::{AgentProc, HttpsClient, RelayProc, TempDir};
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use serde_json::{json, Value};

const OWNER: &str = "alice@example.com";

/// The `mcp-server-sqlite` executable of the venv scripts/test.sh makes
/// (`DRAWBRIDGE_SQLITE_VENV`, else `.venv-sqlite` in the workspace).
fn mcp_server_sqlite() -> PathBuf {
    let venv = std::env::var_os("DRAWBRIDGE_SQLITE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-sqlite")
        });
    let exe = venv.join("bin/mcp-server-sqlite");
    assert!(
        exe.exists(),
        "{} is missing: run scripts/test.sh, which installs tests/requirements-sqlite.txt into .venv-sqlite (or set DRAWBRIDGE_SQLITE_VENV)",
        exe.display()
    );
    exe
}

fn misbehaving_server() -> Vec<String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/stdio_server.py");
    vec![
        e2e::python::python().display().to_string(),
        script.display().to_string(),
    ]
}

struct Setup {
    relay: RelayProc,
    agent: AgentProc,
    token: String,
    http: HttpsClient,
    _dir: TempDir,
}

/// A relay and an agent serving route `s` from `-- command...`.
async fn setup(command: Vec<String>, extra: &[&str]) -> Setup {
    let dir = TempDir::new("stdio");
    let relay = RelayProc::start(&[]).await;
    let agent_token = relay.token(OWNER, false);
    let token = relay.token(OWNER, true);
    let mut upstream: Vec<&str> = extra.to_vec();
    upstream.push("--");
    upstream.extend(command.iter().map(String::as_str));
    let agent = AgentProc::start_upstream(&relay, &agent_token, "s", &upstream, "auto").await;
    let http = HttpsClient::new(&relay.ca(), false);
    Setup {
        relay,
        agent,
        token,
        http,
        _dir: dir,
    }
}

async fn sqlite_setup() -> (Setup, PathBuf) {
    sqlite_setup_with(&[]).await
}

/// The reference server behind the bridge, with `flags` (e.g. a policy).
async fn sqlite_setup_with(flags: &[&str]) -> (Setup, PathBuf) {
    let dir = TempDir::new("stdio-db");
    let db = dir.path().join("ref.db");
    let s = setup(
        vec![
            mcp_server_sqlite().display().to_string(),
            "--db-path".into(),
            db.display().to_string(),
        ],
        flags,
    )
    .await;
    let s = Setup { _dir: dir, ..s };
    (s, db)
}

impl Setup {
    async fn client(&self) -> McpClient {
        mcp::connect(&self.relay.route_url("s"), &self.relay.ca(), &self.token).await
    }

    /// POSTs one JSON-RPC message (with `session`, and `accept`).
    async fn post(&self, msg: &Value, session: Option<&str>, accept: &str) -> Answer {
        self.post_as(&self.token, msg, session, accept).await
    }

    /// [`Setup::post`] with another client token.
    async fn post_as(
        &self,
        token: &str,
        msg: &Value,
        session: Option<&str>,
        accept: &str,
    ) -> Answer {
        let mut b = http::Request::builder()
            .method("POST")
            .uri(self.relay.route_url("s"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("accept", accept);
        if let Some(s) = session {
            b = b.header("mcp-session-id", s);
        }
        self.http
            .fetch(b.body(full_body(msg.to_string())).expect("request"))
            .await
    }

    async fn delete(&self, session: &str) -> Answer {
        let req = http::Request::builder()
            .method("DELETE")
            .uri(self.relay.route_url("s"))
            .header("authorization", format!("Bearer {}", self.token))
            .header("mcp-session-id", session)
            .body(full_body(""))
            .expect("request");
        self.http.fetch(req).await
    }

    /// A new session by hand: initialize, then notifications/initialized.
    async fn session(&self) -> String {
        self.session_as(&self.token).await
    }

    /// [`Setup::session`] with another client token.
    async fn session_as(&self, token: &str) -> String {
        let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},
            "clientInfo":{"name":"e2e","version":"1"}}});
        let a = self.post_as(token, &init, None, BOTH).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert!(a.json()["result"]["serverInfo"].is_object(), "{}", a.text());
        let sid = a
            .headers
            .get("mcp-session-id")
            .expect("Mcp-Session-Id on the initialize answer")
            .to_str()
            .expect("visible ASCII")
            .to_owned();
        assert!(
            sid.len() >= 32 && sid.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "{sid}"
        );
        let a = self
            .post_as(
                token,
                &json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
                Some(&sid),
                BOTH,
            )
            .await;
        assert_eq!(a.status, 202, "{}", a.text());
        sid
    }

    /// The pids of the children the agent started, in order.
    fn child_pids(&self) -> Vec<u32> {
        self.agent
            .proc
            .stderr
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|l| l.split("started child pid=").nth(1))
            .filter_map(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|d| d.parse().ok())
            })
            .collect()
    }

    /// Waits until at least `n` children were started; returns the pids.
    async fn wait_children(&self, n: usize) -> Vec<u32> {
        for _ in 0..600 {
            let pids = self.child_pids();
            if pids.len() >= n {
                return pids;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the agent did not start {n} children:\n{}",
            self.agent.proc.stderr_text()
        );
    }
}

const BOTH: &str = "application/json, text/event-stream";

fn call_msg(id: u64, tool: &str, args: Value) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}})
}

async fn call(client: &McpClient, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args as JsonObject))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

/// Whether process `pid` is gone: exited and reaped (a zombie, state `Z`,
/// still has its /proc entry).
fn reaped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_err()
}

async fn wait_reaped(pid: u32) {
    for _ in 0..400 {
        if reaped(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    panic!("child {pid} is still there: {stat}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_sqlite_server_serves_rmcp_sessions_each_with_its_own_child() {
    let (s, db) = sqlite_setup().await;
    let a = s.client().await;
    let info = a.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("sqlite")
    );
    let tools = a.list_all_tools().await.expect("tools/list");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "append_insight",
            "create_table",
            "describe_table",
            "list_tables",
            "read_query",
            "write_query"
        ]
    );
    let created = call(
        &a,
        "create_table",
        json!({"query": "CREATE TABLE t (n INTEGER)"}),
    )
    .await;
    assert!(text(&created).contains("created"), "{created:?}");
    let wrote = call(
        &a,
        "write_query",
        json!({"query": "INSERT INTO t VALUES (40), (2)"}),
    )
    .await;
    assert!(text(&wrote).contains("affected_rows"), "{wrote:?}");

    // A second session, concurrently: its own child, the same database.
    let b = s.client().await;
    let read = call(
        &b,
        "read_query",
        json!({"query": "SELECT SUM(n) AS total FROM t"}),
    )
    .await;
    assert!(text(&read).contains("42"), "{read:?}");
    let pids = s.wait_children(2).await;
    assert_eq!(pids.len(), 2, "one child per session: {pids:?}");
    assert_ne!(pids[0], pids[1]);
    assert!(db.exists());
    a.cancel().await.expect("close a");
    b.cancel().await.expect("close b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_session_kills_its_child_and_leaves_no_zombie() {
    let (s, _db) = sqlite_setup().await;
    let sid = s.session().await;
    let pid = *s.wait_children(1).await.last().expect("pid");
    let a = s
        .post(&call_msg(2, "list_tables", json!({})), Some(&sid), BOTH)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(!reaped(pid), "the child runs while its session lives");

    let d = s.delete(&sid).await;
    assert!(
        d.status == 200 || d.status == 204,
        "{} {}",
        d.status,
        d.text()
    );
    wait_reaped(pid).await;

    // The session is gone: 404 with a JSON-RPC error, and DELETE again too.
    let gone = s
        .post(&call_msg(3, "list_tables", json!({})), Some(&sid), BOTH)
        .await;
    assert_eq!(gone.status, 404, "{}", gone.text());
    assert_eq!(gone.json()["error"]["code"], -32600, "{}", gone.text());
    assert_eq!(s.delete(&sid).await.status, 404);
    // A made-up session id is unknown as well.
    let made_up = s
        .post(
            &call_msg(4, "list_tables", json!({})),
            Some("not-a-session"),
            BOTH,
        )
        .await;
    assert_eq!(made_up.status, 404, "{}", made_up.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_mcp_client_uses_the_reference_server_in_both_modes() {
    let (s, _db) = sqlite_setup().await;
    for (mode, version) in [("auto", "2026-07-28"), ("legacy", "2025-11-25")] {
        let v = e2e::python::run_json(
            "mcp_client.py",
            &[
                s.relay.route_url("s").into(),
                s.token.clone().into(),
                s.relay.ca().into(),
                mode.into(),
                "reference".into(),
            ],
        )
        .await;
        assert_eq!(v["protocol_version"], version, "{mode}: {v}");
        assert_eq!(v["server_name"], "sqlite", "{mode}: {v}");
        assert_eq!(
            v["tools"],
            json!([
                "append_insight",
                "create_table",
                "describe_table",
                "list_tables",
                "read_query",
                "write_query"
            ]),
            "{mode}"
        );
        assert!(
            v["wrote"].as_str().unwrap_or("").contains("affected_rows"),
            "{v}"
        );
        let total = if mode == "auto" { "42" } else { "84" };
        assert!(
            v["read"].as_str().unwrap_or("").contains(total),
            "{mode}: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_child_is_a_clear_error_and_a_new_session_gets_a_fresh_one() {
    let s = setup(misbehaving_server(), &[]).await;
    let sid = s.session().await;
    let first = *s.wait_children(1).await.last().expect("pid");
    // The pending request of a child that exits gets -32603 naming the
    // command and its exit status.
    let a = s
        .post(&call_msg(2, "exit", json!({"code": 3})), Some(&sid), BOTH)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["id"], 2, "{v}");
    assert_eq!(v["error"]["code"], -32603, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("stdio_server.py") && msg.contains("exit status: 3"),
        "{msg}"
    );
    wait_reaped(first).await;
    // Its session is gone.
    let next = s
        .post(
            &call_msg(3, "echo", json!({"text": "hi"})),
            Some(&sid),
            BOTH,
        )
        .await;
    assert_eq!(next.status, 404, "{}", next.text());

    // A new session: a fresh child. Killed from outside, its session ends too.
    let sid2 = s.session().await;
    let second = *s.wait_children(2).await.last().expect("pid");
    assert_ne!(first, second);
    let ok = s
        .post(
            &call_msg(4, "echo", json!({"text": "hi"})),
            Some(&sid2),
            BOTH,
        )
        .await;
    assert!(
        ok.text().contains(&format!("hi pid={second}")),
        "{}",
        ok.text()
    );
    let status = std::process::Command::new("kill")
        .args(["-KILL", &second.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(
        s.agent
            .proc
            .wait_stderr(&format!("(pid {second}) exited"), Duration::from_secs(30))
            .await,
        "the agent noticed the crash"
    );
    wait_reaped(second).await;
    let gone = s
        .post(
            &call_msg(5, "echo", json!({"text": "hi"})),
            Some(&sid2),
            BOTH,
        )
        .await;
    assert_eq!(gone.status, 404, "{}", gone.text());
    // And rmcp's client works on a third child.
    let c = s.client().await;
    let r = call(&c, "echo", json!({"text": "again"})).await;
    let third = *s.wait_children(3).await.last().expect("pid");
    assert_eq!(text(&r), format!("again pid={third}"));
    c.cancel().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_child_is_contained() {
    let s = setup(misbehaving_server(), &[]).await;
    let sid = s.session().await;
    // Garbage and responses to ids the bridge never sent are dropped.
    let a = s
        .post(&call_msg(7, "garbage", json!({})), Some(&sid), BOTH)
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["id"], 7, "{v}");
    assert_eq!(v["result"]["content"][0]["text"], "after garbage", "{v}");
    assert!(
        s.agent
            .proc
            .wait_stderr("not JSON", Duration::from_secs(10))
            .await
    );
    assert!(
        s.agent
            .proc
            .wait_stderr("never sent", Duration::from_secs(10))
            .await
    );

    // Progress before the response: an event stream for a client that takes
    // one, with the client's own token; JSON for one that does not.
    let mut progress = call_msg(8, "progress", json!({}));
    progress["params"]["_meta"] = json!({"progressToken": "my-token"});
    let a = s.post(&progress, Some(&sid), BOTH).await;
    assert_eq!(
        a.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/event-stream"),
        "{}",
        a.text()
    );
    let events: Vec<Value> = a
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("event JSON"))
        .collect();
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[0]["params"]["progressToken"], "my-token");
    assert_eq!(events[2]["method"], "notifications/message");
    assert_eq!(events[3]["id"], 8);
    assert_eq!(events[3]["result"]["content"][0]["text"], "done");
    let a = s.post(&progress, Some(&sid), "application/json").await;
    assert_eq!(
        a.json()["result"]["content"][0]["text"],
        "done",
        "{}",
        a.text()
    );

    // A line over 16 MiB: a clear error, the child killed; a new session works.
    let pid = *s.wait_children(1).await.last().expect("pid");
    let a = s
        .post(&call_msg(9, "huge", json!({})), Some(&sid), BOTH)
        .await;
    let v = a.json();
    assert_eq!(v["error"]["code"], -32603, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("longer than"),
        "{v}"
    );
    wait_reaped(pid).await;
    let sid2 = s.session().await;
    let a = s
        .post(
            &call_msg(10, "echo", json!({"text": "ok"})),
            Some(&sid2),
            BOTH,
        )
        .await;
    assert!(a.text().contains("ok pid="), "{}", a.text());

    // Not JSON from the client: -32700; a batch: refused; both change nothing.
    let req = http::Request::builder()
        .method("POST")
        .uri(s.relay.route_url("s"))
        .header("authorization", format!("Bearer {}", s.token))
        .header("content-type", "application/json")
        .header("mcp-session-id", &sid2)
        .body(full_body("{not json"))
        .expect("request");
    let bad = s.http.fetch(req).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(bad.json()["error"]["code"], -32700, "{}", bad.text());
    let a = s
        .post(
            &call_msg(11, "echo", json!({"text": "still"})),
            Some(&sid2),
            BOTH,
        )
        .await;
    assert!(a.text().contains("still pid="), "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_clients_share_one_child_the_bridge_initialized() {
    let s = setup(misbehaving_server(), &[]).await;
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}});
    let discover =
        json!({"jsonrpc":"2.0","id":"d","method":"server/discover","params":{"_meta": meta}});
    let a = s.post(&discover, None, BOTH).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["id"], "d");
    assert_eq!(
        v["result"]["supportedVersions"],
        json!(["2026-07-28"]),
        "{v}"
    );
    assert_eq!(
        v["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "misbehaving"
    );
    assert!(v["result"]["capabilities"]["tools"].is_object(), "{v}");
    assert!(a.headers.get("mcp-session-id").is_none());
    // Two callers with the same id each get their own answer.
    let mut one = call_msg(1, "echo", json!({"text": "one"}));
    one["params"]["_meta"] = meta.clone();
    let mut two = call_msg(1, "echo", json!({"text": "two"}));
    two["params"]["_meta"] = meta.clone();
    let (r1, r2) = tokio::join!(s.post(&one, None, BOTH), s.post(&two, None, BOTH));
    assert!(r1.text().contains("one pid="), "{}", r1.text());
    assert!(r2.text().contains("two pid="), "{}", r2.text());
    assert_eq!(
        (r1.json()["id"].clone(), r2.json()["id"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(s.child_pids().len(), 1, "one shared child");
    // The shared child crashes: an error now, a fresh child next time.
    let mut exit = call_msg(2, "exit", json!({"code": 5}));
    exit["params"]["_meta"] = meta.clone();
    let e = s.post(&exit, None, BOTH).await.json();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("exit status: 5"),
        "{e}"
    );
    let again = s.post(&one, None, BOTH).await;
    assert!(again.text().contains("one pid="), "{}", again.text());
    let pids = s.wait_children(2).await;
    assert_ne!(pids[0], pids[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_end_when_idle_and_when_the_agent_stops_and_the_get_stream_gets_the_rest() {
    let mut s = setup(misbehaving_server(), &["--idle-timeout", "1s"]).await;
    // Session A does nothing: its child is stopped after the idle timeout.
    let a = s.session().await;
    let pid_a = *s.wait_children(1).await.last().expect("pid");
    wait_reaped(pid_a).await;
    assert!(
        s.agent
            .proc
            .wait_stderr("idle for 1s", Duration::from_secs(10))
            .await
    );
    let gone = s
        .post(&call_msg(2, "echo", json!({"text": "x"})), Some(&a), BOTH)
        .await;
    assert_eq!(gone.status, 404, "{}", gone.text());

    // Session B holds its GET stream open: not idle. A message of the child
    // that belongs to no request arrives on it.
    let b = s.session().await;
    let pid_b = *s.wait_children(2).await.last().expect("pid");
    let get = http::Request::builder()
        .method("GET")
        .uri(s.relay.route_url("s"))
        .header("authorization", format!("Bearer {}", s.token))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &b)
        .body(full_body(""))
        .expect("request");
    let resp = s.http.send(get).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let r = s
        .post(&call_msg(3, "later", json!({})), Some(&b), BOTH)
        .await;
    assert!(r.text().contains("see you later"), "{}", r.text());
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        use http_body_util::BodyExt;
        while !seen.contains("later-news") {
            let frame = body
                .frame()
                .await
                .expect("the stream stays open")
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no later-news on the GET stream: {seen}"));
    // Well past the idle timeout, B's child still runs (its stream is open).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !reaped(pid_b),
        "a session with an open GET stream is not idle"
    );
    let ok = s
        .post(
            &call_msg(4, "echo", json!({"text": "alive"})),
            Some(&b),
            BOTH,
        )
        .await;
    assert!(
        ok.text().contains(&format!("alive pid={pid_b}")),
        "{}",
        ok.text()
    );

    // The agent stops: every child is stopped and reaped.
    s.agent.proc.signal("TERM");
    s.agent.proc.wait_exit(Duration::from_secs(30)).await;
    wait_reaped(pid_b).await;
    assert!(
        s.agent
            .proc
            .stderr_text()
            .contains(&format!("(pid {pid_b}) was stopped")),
        "the agent stopped and reaped the child itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_route_refuses_the_sqlite_shells_file_functions() {
    // A server built on the SQLite shell's extensions (fileio, zipfile,
    // sqlar) would read the laptop's files for SQL that only "reads".
    let (s, _db) = sqlite_setup_with(&["--read-only"]).await;
    let c = s.client().await;
    for sql in [
        "SELECT name FROM fsdir('/etc')",
        "SELECT name, data FROM zipfile('/home/alice/secrets.zip')",
        "SELECT zipfile(name, data) AS z FROM sqlite_master",
        "SELECT sqlar_uncompress(data, sz) AS d FROM sqlar",
        "SELECT sqlar_compress(x'00') AS c",
    ] {
        let Value::Object(args) = json!({ "query": sql }) else {
            unreachable!()
        };
        let e = c
            .call_tool(CallToolRequestParams::new("read_query").with_arguments(args))
            .await
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("-32001") && e.contains("read-only-functions"),
            "{sql}: {e}"
        );
    }
    // Plain reads still reach the server.
    let read = call(&c, "read_query", json!({"query": "SELECT 41 + 1 AS n"})).await;
    assert!(text(&read).contains("42"), "{read:?}");
    c.cancel().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_route_keeps_writes_away_from_the_reference_server() {
    // The reference server judges SQL by its first word; the policy judges
    // what the SQL does, before anything reaches the child.
    let (s, _db) = sqlite_setup_with(&["--read-only"]).await;
    let c = s.client().await;
    let read = call(&c, "read_query", json!({"query": "SELECT 41 + 1 AS n"})).await;
    assert!(text(&read).contains("42"), "{read:?}");
    for (tool, sql) in [
        ("write_query", "CREATE TABLE t (n INTEGER)"),
        ("read_query", "SELECT 1; DROP TABLE t"),
        ("read_query", "WITH x AS (SELECT 1) DELETE FROM t"),
    ] {
        let Value::Object(args) = json!({"query": sql}) else {
            unreachable!()
        };
        let e = c
            .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
            .await
            .expect_err("refused")
            .to_string();
        // A tool nobody may call on a read-only route is an unknown tool;
        // a reading tool refused for its SQL names the rule.
        let refused = if tool == "write_query" {
            e.contains("-32602") && e.contains("Unknown tool: write_query")
        } else {
            e.contains("-32001") && e.contains("read-only")
        };
        assert!(refused, "{tool} {sql}: {e}");
    }
    // The session still works.
    let again = call(&c, "list_tables", json!({})).await;
    assert!(!again.is_error.unwrap_or(false), "{again:?}");
    c.cancel().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_does_not_exist_stops_the_agent_at_start() {
    let relay = RelayProc::start(&[]).await;
    let token = relay.token(OWNER, false);
    let mut agent = AgentProc::spawn_upstream(
        &relay,
        &token,
        "s",
        &["--", "drawbridge-no-such-mcp-server", "--flag"],
        "auto",
        &[],
    );
    let code = agent.proc.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(1));
    let err = agent.proc.stderr_text();
    assert!(
        err.contains("cannot find the stdio MCP server's program `drawbridge-no-such-mcp-server`"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_max_sessions_are_refused_until_one_ends() {
    let s = setup(misbehaving_server(), &["--max-sessions", "2"]).await;
    let a = s.session().await;
    let _b = s.session().await;
    let init = json!({"jsonrpc":"2.0","id":9,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},
        "clientInfo":{"name":"e2e","version":"1"}}});
    let refused = s.post(&init, None, BOTH).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    let v = refused.json();
    assert_eq!(v["id"], 9);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("already has 2 MCP sessions"),
        "{v}"
    );
    assert_eq!(s.child_pids().len(), 2, "no third child");
    assert_eq!(s.delete(&a).await.status, 200);
    let _c = s.session().await;
    assert_eq!(s.wait_children(3).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grantee_cannot_take_every_session_and_unused_sessions_end() {
    const BOB: &str = "bob@example.com";
    let s = setup(
        misbehaving_server(),
        &[
            "--allow",
            BOB,
            "--max-sessions",
            "4",
            "--max-sessions-per-identity",
            "2",
            "--unused-session-timeout",
            "3s",
        ],
    )
    .await;
    let bob = s.relay.token(BOB, true);
    // Bob opens sessions as fast as he can: two, then refused.
    let b1 = s.session_as(&bob).await;
    let b2 = s.session_as(&bob).await;
    let init = json!({"jsonrpc":"2.0","id":7,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},
        "clientInfo":{"name":"e2e","version":"1"}}});
    for _ in 0..3 {
        let refused = s.post_as(&bob, &init, None, BOTH).await;
        assert_eq!(refused.status, 429, "{}", refused.text());
        let v = refused.json();
        assert_eq!(v["id"], 7);
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains("already have 2 MCP sessions")
                && msg.contains("--max-sessions-per-identity"),
            "{v}"
        );
    }
    assert_eq!(s.child_pids().len(), 2, "no third child for Bob");
    // The owner still gets a session, and uses it.
    let owner = s.session().await;
    let a = s
        .post(
            &call_msg(2, "echo", json!({"text": "hi"})),
            Some(&owner),
            BOTH,
        )
        .await;
    assert!(a.text().contains("hi pid="), "{}", a.text());
    // Bob never made a call: his sessions end after --unused-session-timeout
    // and he may open new ones; the owner's session, used, lives on.
    // (A request would count as use: watch the agent's log instead.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let unused = "after initialize (--unused-session-timeout)";
    while s.agent.proc.stderr_text().matches(unused).count() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Bob's unused sessions live on: {}",
            s.agent.proc.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Their children are stopping: the sessions are gone (at once, or
    // as soon as the children have seen their stdin close).
    for sid in [&b1, &b2] {
        let ping = json!({"jsonrpc":"2.0","id":3,"method":"ping"});
        loop {
            let a = s.post_as(&bob, &ping, Some(sid), BOTH).await;
            if a.status == 404 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{}", a.text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let _b3 = s.session_as(&bob).await;
    let a = s
        .post(
            &call_msg(5, "echo", json!({"text": "still"})),
            Some(&owner),
            BOTH,
        )
        .await;
    assert!(a.text().contains("still pid="), "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_on_a_childs_stdout_is_logged_at_a_bounded_rate() {
    let s = setup(misbehaving_server(), &[]).await;
    let sid = s.session().await;
    let a = s
        .post(
            &call_msg(2, "junk", json!({"count": 5000})),
            Some(&sid),
            BOTH,
        )
        .await;
    assert!(a.text().contains("after junk"), "{}", a.text());
    // The child still answers.
    let a = s
        .post(
            &call_msg(3, "echo", json!({"text": "clean"})),
            Some(&sid),
            BOTH,
        )
        .await;
    assert!(a.text().contains("clean pid="), "{}", a.text());
    let logged = || {
        s.agent
            .proc
            .stderr_text()
            .lines()
            .filter(|l| l.contains("not JSON; ignored"))
            .count()
    };
    assert!(
        (1..=5).contains(&logged()),
        "{} junk lines logged",
        logged()
    );
    // The rest is counted, and the count logged when the child ends.
    assert_eq!(s.delete(&sid).await.status, 200);
    assert!(
        s.agent
            .proc
            .wait_stderr("4995 more lines of junk", Duration::from_secs(10))
            .await,
        "{}",
        s.agent.proc.stderr_text()
    );
    assert!(logged() <= 5, "{} junk lines logged", logged());
}

/// Whether `pid` has died (gone, or a zombie waiting for whoever inherited it).
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Every live process whose parent is `pid`, and theirs, recursively.
fn descendants(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            break;
        };
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) && !dead(child) {
                all.push(child);
                frontier.push(child);
            }
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_with_sigkill_leaves_no_orphan_children() {
    // Children that ignore SIGTERM and do not exit when their stdin closes:
    // only the kernel's parent-death signal can end them with the agent.
    let mut command = misbehaving_server();
    command.push("--linger".into());
    let mut s = setup(command, &[]).await;
    let a = s.session().await;
    let b = s.session().await;
    for sid in [&a, &b] {
        let r = s
            .post(&call_msg(2, "echo", json!({"text": "hi"})), Some(sid), BOTH)
            .await;
        assert!(r.text().contains("hi pid="), "{}", r.text());
    }
    let pids = s.wait_children(2).await;
    let tree = descendants(s.agent.proc.pid);
    for pid in &pids {
        assert!(
            tree.contains(pid),
            "child {pid} is not in the agent's process tree {tree:?}"
        );
    }
    s.agent.proc.kill().await;
    let mut left = tree.clone();
    for _ in 0..400 {
        left.retain(|p| !dead(*p));
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for pid in &left {
        // Leave nothing behind, even when failing.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    assert!(
        left.is_empty(),
        "processes of the SIGKILLed agent still alive: {left:?} (of {tree:?})"
    );
    // The route reports the agent gone rather than hanging.
    let r = s
        .post(&call_msg(3, "echo", json!({"text": "x"})), Some(&a), BOTH)
        .await;
    assert!(
        r.status.is_client_error() || r.status.is_server_error(),
        "{}",
        r.text()
    );
}
