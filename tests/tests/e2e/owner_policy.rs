//! The route owner's policy, from `agent connect` flags or a Cedar file,
//! decided at the relay for every message and again on the laptop: allow,
//! deny, read-only that judges the SQL, an organisation that allows while
//! the owner forbids, and the agent's live line for each request.

use std::time::Duration;

use e2e::mcp::{self, McpClient};
use e2e::procs::{bin, Proc};
use e2e::{AgentProc, HttpsClient, RelayProc, TempDir};
use http::Request;
use rmcp::model::{CallToolRequestParams, JsonObject};
use serde_json::{json, Value};

const OWNER: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";

struct Setup {
    relay: RelayProc,
    agent: AgentProc,
    _dir: TempDir,
}

/// A relay (`relay_flags`) and an agent serving route `db` from the built-in
/// SQLite server with the owner's `policy_flags`.
async fn setup(relay_flags: &[&str], policy_flags: &[&str]) -> Setup {
    let dir = TempDir::new("owner-policy");
    let db_path = dir.path().join("demo.db");
    // --read-only opens the database read-only, so it must exist first.
    drop(
        agent::SqliteDb::open(&db_path, false, Default::default())
            .expect("create the sample database"),
    );
    let db = db_path.display().to_string();
    let relay = RelayProc::start(relay_flags).await;
    let token = relay.token(OWNER, false);
    let mut upstream = vec!["--sqlite", db.as_str()];
    upstream.extend_from_slice(policy_flags);
    let agent = AgentProc::start_upstream(&relay, &token, "db", &upstream, "auto").await;
    Setup {
        relay,
        agent,
        _dir: dir,
    }
}

impl Setup {
    async fn client(&self, who: &str) -> McpClient {
        mcp::connect(
            &self.relay.route_url("db"),
            &self.relay.ca(),
            &self.relay.token(who, true),
        )
        .await
    }

    /// One raw JSON-RPC POST as `who`.
    async fn post(&self, who: &str, body: Value) -> e2e::client::Answer {
        let req = Request::builder()
            .method("POST")
            .uri(self.relay.route_url("db"))
            .header(
                "authorization",
                format!("Bearer {}", self.relay.token(who, true)),
            )
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(e2e::client::full_body(body.to_string()))
            .expect("request");
        HttpsClient::new(&self.relay.ca(), false).fetch(req).await
    }
}

fn args(v: Value) -> JsonObject {
    match v {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

/// The JSON-RPC error a call gets (it must be one, not a tool result).
async fn call_error(client: &McpClient, tool: &str, arguments: Value) -> String {
    match client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args(arguments)))
        .await
    {
        Ok(r) => panic!("{tool} was let through: {r:?}"),
        Err(e) => e.to_string(),
    }
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "owner-policy-test", "version": "1"}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_people_read_only_and_nobody_else() {
    let s = setup(&[], &["--allow", BOB, "--read-only"]).await;

    // Bob may read, through the official Rust SDK.
    let bob = s.client(BOB).await;
    let tools = bob.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "read_query"));
    assert!(
        !tools.iter().any(|t| t.name == "write_query"),
        "a tool nobody may call is not listed"
    );
    let r = bob
        .call_tool(
            CallToolRequestParams::new("read_query")
                .with_arguments(args(json!({"query": "SELECT count(*) AS n FROM orders"}))),
        )
        .await
        .expect("read_query");
    assert_eq!(r.is_error, Some(false), "{r:?}");

    // Writes are refused by the policy, whatever the spelling, before the
    // database sees them. A tool nobody may call is an unknown tool; a
    // visible tool refused for its SQL gets an error naming the rule.
    let e = call_error(&bob, "write_query", json!({"query": "DELETE FROM orders"})).await;
    assert!(
        e.contains("-32602") && e.contains("Unknown tool: write_query"),
        "{e}"
    );
    for sql in [
        "WITH x AS (SELECT 1) DELETE FROM orders",
        "SELECT 1; DROP TABLE orders",
        "ATTACH DATABASE '/tmp/evil.db' AS evil",
    ] {
        let e = call_error(&bob, "read_query", json!({"query": sql})).await;
        assert!(
            e.contains("-32001") && e.contains("read-only-sql"),
            "{sql}: {e}"
        );
    }
    // The owner is held to read-only too.
    let alice = s.client(OWNER).await;
    let e = call_error(
        &alice,
        "create_table",
        json!({"query": "CREATE TABLE t (a)"}),
    )
    .await;
    assert!(
        e.contains("-32602") && e.contains("Unknown tool: create_table"),
        "{e}"
    );
    // And nothing was written.
    let r = alice
        .call_tool(
            CallToolRequestParams::new("read_query")
                .with_arguments(args(json!({"query": "SELECT count(*) AS n FROM orders"}))),
        )
        .await
        .expect("count");
    assert_eq!(
        r.structured_content.expect("structured")["rows"][0]["n"],
        25
    );

    // Carol was not allowed: initialize is refused with a JSON-RPC error.
    let a = s.post(CAROL, initialize()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["error"]["code"], -32001, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("default-deny")),
        "{v}"
    );
    // Nor may she open a GET stream.
    let a = HttpsClient::new(&s.relay.ca(), false)
        .get(&s.relay.route_url("db"), Some(&s.relay.token(CAROL, true)))
        .await;
    assert_eq!(a.status, 403, "{}", a.text());

    // The agent's live line shows who did what, and what was decided.
    let stdout = s.agent.proc.stdout.lock().expect("lock").join("\n");
    assert!(
        stdout.contains(&format!("{BOB} tools/call read_query → allow")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{BOB} initialize → allow")),
        "{stdout}"
    );
    // Denied messages never reached the laptop, so it printed none of them.
    assert!(!stdout.contains(CAROL), "{stdout}");
    assert!(!stdout.contains("write_query"), "{stdout}");

    // The relay's audit holds each denial with its rule.
    let (code, out, err) = s.relay.admin(&["audit", "--decision", "deny", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("read-only-tools") && out.contains(CAROL),
        "{out}"
    );
    bob.cancel().await.expect("close");
    alice.cancel().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisation_that_allows_everybody_cannot_overrule_the_owner() {
    let dir = TempDir::new("org-policy");
    let org = dir.path().join("org.cedar");
    std::fs::write(
        &org,
        "@id(\"everybody\")\npermit (principal, action, resource);\n",
    )
    .expect("write org policy");
    let org = org.display().to_string();
    let s = setup(&["--policy", &org], &["--tools", "read_query,list_tables"]).await;

    // The organisation permits Carol; the owner (only the owner) does not.
    let v = s.post(CAROL, initialize()).await.json();
    assert_eq!(v["error"]["code"], -32001, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("default-deny")),
        "{v}"
    );
    // The owner's --tools holds for the owner as well: other tools are
    // neither listed nor callable.
    let alice = s.client(OWNER).await;
    let mut listed: Vec<String> = alice
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, ["list_tables", "read_query"]);
    let e = call_error(&alice, "describe_table", json!({"table_name": "orders"})).await;
    assert!(
        e.contains("-32602") && e.contains("Unknown tool: describe_table"),
        "{e}"
    );
    let r = alice
        .call_tool(CallToolRequestParams::new("list_tables"))
        .await
        .expect("list_tables");
    assert_eq!(r.is_error, Some(false), "{r:?}");
    alice.cancel().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_file_is_checked_before_the_agent_connects() {
    let dir = TempDir::new("bad-policy");
    let file = dir.path().join("route.cedar");
    std::fs::write(
        &file,
        "permit (principal, action, resource)\n  when { context.nonsense == 1 };\n",
    )
    .expect("write policy");
    let args: Vec<String> = [
        "connect",
        "--relay",
        "https://127.0.0.1:9",
        "--token",
        "x",
        "--sqlite",
        &dir.path().join("db.sqlite").display().to_string(),
        "--policy",
        &file.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = Proc::spawn("agent", &bin("agent"), &args, &[]);
    assert_eq!(p.wait_exit(Duration::from_secs(20)).await, Some(1));
    let err = p.stderr_text();
    assert!(
        err.contains("route.cedar:2:") && err.contains("nonsense"),
        "{err}"
    );

    // --print-policy shows what flags compile to.
    let args: Vec<String> = [
        "connect",
        "--sqlite",
        "unused.db",
        "--allow",
        "@example.com",
        "--read-only",
        "--print-policy",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = Proc::spawn("agent", &bin("agent"), &args, &[]);
    assert_eq!(p.wait_exit(Duration::from_secs(20)).await, Some(0));
    let out = p.stdout.lock().expect("lock").join("\n");
    assert!(out.contains("@id(\"allow-@example.com\")"), "{out}");
    assert!(out.contains("@id(\"read-only-sql\")"), "{out}");
}
