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
        &[
            relay.route_url("db").into(),
            token.clone().into(),
            "2".into(),
        ],
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

/// `mcp-remote --device-code`: the relay does not advertise the device grant
/// (it serves `agent login` only), and registering for it is refused with a
/// reason that `mcp-remote` shows, at once, instead of a sign-in that could
/// never finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_remote_device_code_is_told_the_grant_is_not_offered() {
    let relay = RelayProc::start(&[]).await;
    let http = e2e::HttpsClient::new(&relay.ca(), false);
    let meta = http
        .get(
            &format!("{}/.well-known/oauth-authorization-server", relay.url()),
            None,
        )
        .await
        .json();
    assert!(
        meta.get("device_authorization_endpoint").is_none(),
        "{meta}"
    );
    assert_eq!(
        meta["grant_types_supported"],
        serde_json::json!(["authorization_code", "refresh_token"])
    );

    let dir = TempDir::new("mcpremote");
    let ca = relay.ca().display().to_string();
    let config = dir.path().display().to_string();
    let mut p = e2e::procs::Proc::spawn(
        "mcp-remote",
        &e2e::node::bin("mcp-remote"),
        &[relay.route_url("db"), "--device-code".into()],
        &[
            ("NODE_EXTRA_CA_CERTS", ca.as_str()),
            ("MCP_REMOTE_CONFIG_DIR", config.as_str()),
        ],
    );
    let told = p
        .wait_stderr(
            "is not offered to registered clients",
            std::time::Duration::from_secs(60),
        )
        .await;
    assert!(told, "{}", p.stderr_text());
    assert!(
        p.stderr_text().contains("agent login"),
        "{}",
        p.stderr_text()
    );
    p.kill().await;
}
