//! The official Python MCP client (PyPI `mcp` 2.x) against the built-in
//! SQLite server through relay and agent, in both of its modes: the stateless
//! 2026-07-28 revision (`server/discover`) and the initialize handshake.

use e2e::{AgentProc, RelayProc, TempDir};

async fn run_client(relay: &RelayProc, token: &str, mode: &str) -> serde_json::Value {
    e2e::python::run_json(
        "mcp_client.py",
        &[
            relay.route_url("db").into(),
            token.into(),
            relay.ca().into(),
            mode.into(),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_mcp_client_uses_the_sqlite_route_in_both_modes() {
    let relay = RelayProc::start(&[]).await;
    let dir = TempDir::new("pyclient");
    let db = dir.path().join("demo.db");
    let db = db.display().to_string();
    let _agent = AgentProc::start_upstream(
        &relay,
        &relay.token("alice@x", false),
        "db",
        &["--sqlite", &db],
        "auto",
    )
    .await;
    let token = relay.token("alice@x", true);
    for (mode, version) in [("auto", "2026-07-28"), ("legacy", "2025-11-25")] {
        let v = run_client(&relay, &token, mode).await;
        assert_eq!(v["protocol_version"], version, "{mode}: {v}");
        assert_eq!(
            v["tools"],
            serde_json::json!([
                "append_insight",
                "create_table",
                "describe_table",
                "list_tables",
                "read_query",
                "write_query"
            ]),
            "{mode}"
        );
        assert_eq!(
            v["read_only_hints"],
            serde_json::json!(["describe_table", "list_tables", "read_query"])
        );
        assert_eq!(v["read"]["is_error"], false, "{v}");
        assert_eq!(v["read"]["structured"]["rows"][0]["n"], 12, "{v}");
        assert_eq!(
            v["sneaky_is_error"], true,
            "a DELETE dressed as read_query must fail: {v}"
        );
        assert_eq!(v["memo_contents"], 1);
        assert_eq!(v["prompt_messages"], 1);
    }
}
