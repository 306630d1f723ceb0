//! The built-in SQLite MCP server (`agent connect --sqlite FILE`), reached
//! through the real relay by the official Rust MCP client (rmcp) over
//! Streamable HTTP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::client::{full_body, HttpsClient};
use e2e::mcp::{self, McpClient};
use e2e::procs::{bin, Proc};
use e2e::{AgentProc, RelayProc, TempDir};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, GetPromptRequestParams, JsonObject, ProtocolVersion,
    ReadResourceRequestParams, ResourceContents,
};
use rmcp::ClientLifecycleMode;
use serde_json::{json, Value};

const OWNER: &str = "alice@example.com";

struct Setup {
    relay: RelayProc,
    _agent: AgentProc,
    client_token: String,
    db: PathBuf,
    _dir: TempDir,
}

/// A relay and an agent serving route `db` from `--sqlite <tmp>/demo.db`
/// (plus `extra` upstream flags). `prepare` runs first, e.g. to create the file.
async fn setup(extra: &[&str], prepare: impl FnOnce(&Path)) -> Setup {
    let dir = TempDir::new("mcp-sqlite");
    let db = dir.path().join("demo.db");
    prepare(&db);
    let relay = RelayProc::start(&[]).await;
    let agent_token = relay.token(OWNER, false);
    let client_token = relay.token(OWNER, true);
    let db_arg = db.display().to_string();
    let mut upstream = vec!["--sqlite", db_arg.as_str()];
    upstream.extend_from_slice(extra);
    let agent = AgentProc::start_upstream(&relay, &agent_token, "db", &upstream, "auto").await;
    Setup {
        relay,
        _agent: agent,
        client_token,
        db,
        _dir: dir,
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
}

fn obj(v: Value) -> JsonObject {
    match v {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

async fn call(client: &McpClient, tool: &str, args: Value) -> CallToolResult {
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(obj(args)))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"))
}

/// A successful call's structured result, checked against its text.
#[track_caller]
fn ok(r: &CallToolResult) -> Value {
    assert_eq!(r.is_error, Some(false), "{r:?}");
    let structured = r.structured_content.clone().expect("structuredContent");
    let text = &r.content[0].as_text().expect("text content").text;
    let parsed: Value = serde_json::from_str(text).expect("the text is the same JSON");
    assert_eq!(parsed, structured);
    structured
}

/// A failed call's message.
#[track_caller]
fn tool_error(r: &CallToolResult) -> String {
    assert_eq!(r.is_error, Some(true), "{r:?}");
    r.content[0].as_text().expect("text content").text.clone()
}

async fn order_count(client: &McpClient) -> i64 {
    let r = call(
        client,
        "read_query",
        json!({"query": "SELECT count(*) AS n FROM orders"}),
    )
    .await;
    ok(&r)["rows"][0]["n"].as_i64().expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_server_answers_an_mcp_client_through_the_relay() {
    let s = setup(&[], |_| {}).await;
    assert!(s.db.exists(), "the agent created the database file");
    let client = s.client().await;

    let info = client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("drawbridge-sqlite")
    );
    let negotiated = info.protocol_version.clone();
    eprintln!("negotiated MCP protocol version: {}", negotiated.as_str());
    assert_eq!(negotiated, ProtocolVersion::LATEST_WITH_INITIALIZE);
    let caps = &info.capabilities;
    assert!(caps.tools.is_some() && caps.resources.is_some() && caps.prompts.is_some());

    // The reference server's six tools, with its input schemas, plus annotations.
    let tools = client.list_all_tools().await.expect("tools/list");
    let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(
        names,
        [
            "read_query",
            "write_query",
            "create_table",
            "list_tables",
            "describe_table",
            "append_insight"
        ]
    );
    let tool = |name: &str| tools.iter().find(|t| t.name == name).expect("tool").clone();
    let string_arg = |arg: &str| json!({"type": "object", "properties": {arg: {"type": "string"}}, "required": [arg]});
    for (name, arg) in [
        ("read_query", "query"),
        ("write_query", "query"),
        ("create_table", "query"),
        ("describe_table", "table_name"),
        ("append_insight", "insight"),
    ] {
        let mut schema = Value::Object((*tool(name).input_schema).clone());
        // Descriptions are free text; the shape is what must match.
        if let Some(p) = schema["properties"][arg].as_object_mut() {
            assert!(p.remove("description").is_some(), "{name}");
        }
        assert_eq!(schema, string_arg(arg), "{name}");
    }
    assert_eq!(
        Value::Object((*tool("list_tables").input_schema).clone()),
        json!({"type": "object", "properties": {}})
    );
    for name in ["read_query", "list_tables", "describe_table"] {
        let a = tool(name).annotations.expect("annotations");
        assert_eq!(a.read_only_hint, Some(true), "{name}");
        assert!(tool(name).output_schema.is_some(), "{name}");
    }
    let a = tool("write_query").annotations.expect("annotations");
    assert_eq!(
        (a.read_only_hint, a.destructive_hint),
        (Some(false), Some(true))
    );
    let a = tool("create_table").annotations.expect("annotations");
    assert_eq!(
        (a.read_only_hint, a.destructive_hint),
        (Some(false), Some(false))
    );

    // The sample dataset.
    let r = call(&client, "list_tables", json!({})).await;
    assert_eq!(ok(&r)["tables"], json!(["customers", "orders", "products"]));
    let r = call(
        &client,
        "describe_table",
        json!({"table_name": "customers"}),
    )
    .await;
    let d = ok(&r);
    let cols: Vec<_> = d["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(
        cols,
        [
            json!("id"),
            json!("name"),
            json!("email"),
            json!("city"),
            json!("country"),
            json!("signed_up")
        ]
    );
    assert_eq!(d["row_count"], 12);
    let r = call(
        &client,
        "describe_table",
        json!({"table_name": "customers; DROP TABLE customers"}),
    )
    .await;
    assert!(tool_error(&r).contains("no such table"));

    // Reads come back as rows of JSON objects.
    let r = call(
        &client,
        "read_query",
        json!({"query": "SELECT c.name, sum(o.quantity) AS items FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.id ORDER BY items DESC, c.name LIMIT 2"}),
    )
    .await;
    let rows = ok(&r);
    assert_eq!(rows["columns"], json!(["name", "items"]));
    assert_eq!(
        rows["rows"][0],
        json!({"name": "Radia Perlman", "items": 5})
    );
    assert_eq!(rows["row_count"], 2);
    assert!(rows.get("truncated").is_none(), "{rows}");

    // A write hidden in a read is refused by SQLite, and nothing changes.
    for sql in [
        "WITH x AS (SELECT 1) DELETE FROM orders",
        "SELECT 1; DROP TABLE orders",
        "DELETE FROM orders",
        "ATTACH DATABASE ':memory:' AS other",
        "PRAGMA query_only = 0",
    ] {
        let r = call(&client, "read_query", json!({"query": sql})).await;
        let msg = tool_error(&r);
        assert!(
            msg.contains("read_query runs one read-only statement"),
            "{sql}: {msg}"
        );
    }
    assert_eq!(order_count(&client).await, 25);
    let r = call(
        &client,
        "read_query",
        json!({"query": "SELECT * FROM nowhere"}),
    )
    .await;
    assert!(tool_error(&r).contains("no such table: nowhere"));

    // Writes.
    let r = call(
        &client,
        "write_query",
        json!({"query": "INSERT INTO orders (customer_id, product_id, quantity, ordered_at, status) VALUES (3, 2, 1, '2024-11-02', 'pending')"}),
    )
    .await;
    assert_eq!(ok(&r)["affected_rows"], 1);
    assert_eq!(order_count(&client).await, 26);
    let r = call(
        &client,
        "write_query",
        json!({"query": "DROP TABLE orders"}),
    )
    .await;
    assert!(tool_error(&r).contains("write_query runs one INSERT, UPDATE or DELETE"));
    let r = call(&client, "write_query", json!({"query": "SELECT 1"})).await;
    tool_error(&r);

    // Tables.
    let r = call(
        &client,
        "create_table",
        json!({"query": "CREATE TABLE suppliers (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"}),
    )
    .await;
    assert_eq!(ok(&r)["table"], "suppliers");
    let r = call(
        &client,
        "create_table",
        json!({"query": "DROP TABLE customers"}),
    )
    .await;
    assert!(tool_error(&r).contains("create_table runs one CREATE TABLE"));
    let r = call(&client, "list_tables", json!({})).await;
    assert_eq!(
        ok(&r)["tables"],
        json!(["customers", "orders", "products", "suppliers"])
    );

    // Insights, and the memo resource that collects them.
    let resources = client.list_all_resources().await.expect("resources/list");
    assert_eq!(resources.len(), 1);
    assert_eq!(resources[0].uri, "memo://insights");
    let r = call(
        &client,
        "append_insight",
        json!({"insight": "Radia Perlman buys the most items"}),
    )
    .await;
    assert_eq!(ok(&r)["insight_count"], 1);
    let memo = client
        .read_resource(ReadResourceRequestParams::new("memo://insights"))
        .await
        .expect("resources/read");
    match &memo.contents[0] {
        ResourceContents::TextResourceContents { uri, text, .. } => {
            assert_eq!(uri, "memo://insights");
            assert!(
                text.contains("- Radia Perlman buys the most items"),
                "{text}"
            );
        }
        other => panic!("not text: {other:?}"),
    }
    assert!(client
        .read_resource(ReadResourceRequestParams::new("memo://other"))
        .await
        .is_err());

    // The demo prompt.
    let prompts = client.list_all_prompts().await.expect("prompts/list");
    assert_eq!(prompts.len(), 1);
    assert_eq!(prompts[0].name, "mcp-demo");
    let args = prompts[0].arguments.clone().unwrap_or_default();
    assert_eq!(args[0].name, "topic");
    assert_eq!(args[0].required, Some(true));
    let prompt = client
        .get_prompt(
            GetPromptRequestParams::new("mcp-demo")
                .with_arguments(obj(json!({"topic": "coffee roasting"}))),
        )
        .await
        .expect("prompts/get");
    assert_eq!(
        prompt.description.as_deref(),
        Some("Demo template for coffee roasting")
    );
    let text = &prompt.messages[0].content.as_text().expect("text").text;
    assert!(text.contains("coffee roasting"), "{text}");
    assert!(client
        .get_prompt(GetPromptRequestParams::new("mcp-demo"))
        .await
        .is_err());

    // An unknown tool is a protocol error, not a tool result.
    assert!(client
        .call_tool(CallToolRequestParams::new("drop_everything"))
        .await
        .is_err());

    client.cancel().await.expect("close the session");
}

/// The owner may do everything: a policy file that lets writes through to
/// the database, so that what refuses them is SQLite itself.
const OWNER_ANYTHING: &str =
    "permit (principal, action, resource)\n  when { principal.email == context.route.owner };\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_refuses_writes_itself() {
    let policy_dir = TempDir::new("policy");
    let policy = policy_dir.path().join("owner.cedar");
    std::fs::write(&policy, OWNER_ANYTHING).expect("write policy");
    let policy = policy.display().to_string();
    let s = setup(&["--read-only", "--policy", &policy], |db| {
        // The file exists first: --read-only does not create one.
        drop(
            agent::SqliteDb::open(db, false, Default::default())
                .expect("create the sample database"),
        );
    })
    .await;
    let before = std::fs::read(&s.db).expect("db file");
    let client = s.client().await;
    let tools = client.list_all_tools().await.expect("tools/list");
    let write = tools
        .iter()
        .find(|t| t.name == "write_query")
        .expect("write_query");
    assert!(write
        .description
        .as_deref()
        .is_some_and(|d| d.contains("read-only")));

    let r = call(
        &client,
        "write_query",
        json!({"query": "DELETE FROM orders"}),
    )
    .await;
    let msg = tool_error(&r);
    assert!(msg.contains("read-only"), "{msg}");
    let r = call(
        &client,
        "create_table",
        json!({"query": "CREATE TABLE t (a)"}),
    )
    .await;
    assert!(tool_error(&r).contains("read-only"));
    let r = call(
        &client,
        "read_query",
        json!({"query": "WITH x AS (SELECT 1) DELETE FROM orders"}),
    )
    .await;
    tool_error(&r);
    assert_eq!(order_count(&client).await, 25);
    client.cancel().await.expect("close");
    assert_eq!(
        std::fs::read(&s.db).expect("db file"),
        before,
        "the file is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_2026_client_is_served_too() {
    let s = setup(&[], |_| {}).await;
    let client = mcp::connect_with(
        &s.relay.route_url("db"),
        &s.relay.ca(),
        &s.client_token,
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
    )
    .await;
    let info = client.peer_info().expect("server info");
    assert_eq!(info.protocol_version, ProtocolVersion::V_2026_07_28);
    let tools = client.list_all_tools().await.expect("tools/list");
    assert_eq!(tools.len(), 6);
    assert_eq!(order_count(&client).await, 25);
    let r = call(
        &client,
        "read_query",
        json!({"query": "DELETE FROM orders"}),
    )
    .await;
    tool_error(&r);
    client.cancel().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_needs_an_existing_database() {
    let dir = TempDir::new("mcp-sqlite-missing");
    let db = dir.path().join("missing.db");
    let args: Vec<String> = [
        "connect",
        "--relay",
        "https://127.0.0.1:9",
        "--token",
        "dbat_unused",
        "--sqlite",
        &db.display().to_string(),
        "--read-only",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = Proc::spawn("agent", &bin("agent"), &args, &[]);
    assert_eq!(p.wait_exit(Duration::from_secs(20)).await, Some(1));
    assert!(
        p.stderr_text().contains("does not exist"),
        "{}",
        p.stderr_text()
    );
    assert!(!db.exists());

    // --http and --sqlite exclude each other, one of them is needed,
    // --plain-http goes with --http, and --policy excludes --allow. (A relay is named so that a command
    // wrongly accepted would not start an embedded relay.)
    for upstream in [
        vec!["--sqlite", "x.db", "--http", "http://127.0.0.1:1"],
        vec![],
        vec!["--sqlite", "x.db", "--plain-http"],
        vec![
            "--sqlite", "x.db", "--policy", "p.cedar", "--allow", "a@b.c",
        ],
    ] {
        let mut args: Vec<String> = ["connect", "--relay", "https://127.0.0.1:9", "--token", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(upstream.iter().map(|s| s.to_string()));
        let mut p = Proc::spawn("agent", &bin("agent"), &args, &[]);
        assert_eq!(
            p.wait_exit(Duration::from_secs(20)).await,
            Some(2),
            "{upstream:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_serves_the_sample_database_to_an_mcp_client() {
    let dir = TempDir::new("mcp-sqlite-embedded");
    let db = dir.path().join("demo.db");
    let args: Vec<String> = [
        "connect",
        "--sqlite",
        &db.display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        &dir.path().join("state").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = Proc::spawn("agent", &bin("agent"), &args, &[]);
    let field = |line: String, label: &str| {
        line.split(label)
            .nth(1)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|| panic!("no {label:?} in {line:?}"))
    };
    p.wait_stdout("with sample data", Duration::from_secs(30))
        .await;
    let ca = field(
        p.wait_stdout("trust its CA:", Duration::from_secs(30))
            .await,
        "trust its CA:",
    );
    let token = field(
        p.wait_stdout("client token:", Duration::from_secs(5)).await,
        "client token:",
    );
    let url = field(
        p.wait_stdout("MCP server:", Duration::from_secs(5)).await,
        "MCP server:",
    );
    let url = url.split_whitespace().next().expect("url").to_owned();
    let hint = p.wait_stdout("try:", Duration::from_secs(5)).await;
    assert!(hint.contains("initialize") && hint.contains(&url), "{hint}");
    p.wait_stdout("is live at", Duration::from_secs(30)).await;

    let client = mcp::connect(&url, Path::new(&ca), &token).await;
    assert_eq!(client.list_all_tools().await.expect("tools").len(), 6);
    let r = call(&client, "list_tables", json!({})).await;
    assert_eq!(ok(&r)["tables"], json!(["customers", "orders", "products"]));

    // Ctrl-C stops promptly while the client is still connected: its open
    // GET stream (server-to-client events) ends at once instead of holding
    // the drain (10s by default).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    p.signal("INT");
    assert_eq!(p.wait_exit(Duration::from_secs(20)).await, Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        started.elapsed()
    );
    drop(client);
}

/// A stateless call whose only answer is its response comes back as JSON
/// (one write through the tunnel, not a one-event SSE stream), and the
/// relay's log line says where the time went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_call_is_answered_as_json_and_its_time_is_logged() {
    let s = setup(&[], |_| {}).await;
    let client = HttpsClient::new(&s.relay.ca(), false);
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "read_query", "arguments": {"query": "SELECT 1 AS one"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1"}}}});
    let req = http::Request::builder()
        .method("POST")
        .uri(s.relay.route_url("db"))
        .header("authorization", format!("Bearer {}", s.client_token))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "read_query")
        .body(full_body(body.to_string()))
        .expect("request");
    let answer = client.fetch(req).await;
    assert_eq!(answer.status, http::StatusCode::OK, "{}", answer.text());
    assert_eq!(
        answer.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..]),
        "a whole answer is JSON, not an event stream"
    );
    let v = answer.json();
    assert_eq!(v["id"], 7);
    assert_eq!(v["result"]["structuredContent"]["rows"][0]["one"], 1, "{v}");

    // The request's log line: where its time went, without colour codes.
    assert!(
        s.relay
            .proc
            .wait_stderr("agent_us=", Duration::from_secs(5))
            .await,
        "no timing in the relay's log:\n{}",
        s.relay.proc.stderr_text()
    );
    let log = s.relay.proc.stderr_text();
    let line = log
        .lines()
        .find(|l| l.contains("POST") && l.contains("agent_us="))
        .expect("the request's line");
    for field in ["head_us=", "policy_us=", "agent_us="] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    assert!(
        !line.contains('\u{1b}'),
        "escape codes in a log file: {line:?}"
    );
}
