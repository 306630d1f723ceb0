//! Real MCP clients from npm through relay and agent to the built-in SQLite
//! server: the official TypeScript SDK over Streamable HTTP, and the same SDK
//! over stdio to `mcp-remote`, which speaks HTTP to the relay.

use e2e::{AgentProc, RelayProc, TempDir};

const TOOLS: [&str; 6] = [
    "append_insight",
    "create_table",
    "describe_table",
    "list_tables",
    "read_query",
    "write_query",
];

fn assert_session(v: &serde_json::Value, what: &str) {
    assert_eq!(v["connected"], true, "{what}: {v}");
    assert_eq!(v["tools"], serde_json::json!(TOOLS), "{what}: {v}");
    assert_eq!(v["read_is_error"], false, "{what}: {v}");
    assert_eq!(v["rows"][0]["n"], 12, "{what}: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_and_mcp_remote_use_the_sqlite_route() {
    let relay = RelayProc::start(&[]).await;
    let dir = TempDir::new("npmclients");
    let db = dir.path().join("demo.db").display().to_string();
    let _agent = AgentProc::start_upstream(
        &relay,
        &relay.token("alice@x", false),
        "db",
        &["--sqlite", &db],
        "auto",
    )
    .await;
    let token = relay.token("alice@x", true);

    let v = e2e::node::run_json(
        "ts_client.mjs",
        &relay.ca(),
        &[relay.route_url("db").into(), token.clone().into(), "2".into()],
    )
    .await;
    for s in v["sessions"].as_array().expect("sessions") {
        assert_session(s, "TypeScript SDK");
    }

    let v = e2e::node::run_json(
        "ts_client.mjs",
        &relay.ca(),
        &[
            relay.route_url("db").into(),
            token.into(),
            "1".into(),
            "--via-mcp-remote".into(),
        ],
    )
    .await;
    assert_session(&v["sessions"][0], "mcp-remote");
}
