//! The official Python MCP client (PyPI `mcp` 2.x) against the built-in
//! SQLite server through relay and agent, in both of its modes: the stateless
//! 2026-07-28 revision (`server/discover`) and the initialize handshake.

use std::path::PathBuf;
use std::time::Duration;

use e2e::{AgentProc, RelayProc, TempDir};

/// The Python of the venv `scripts/test.sh` installs `tests/requirements.txt` into.
pub(crate) fn python() -> PathBuf {
    let venv = std::env::var_os("VIRTUAL_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-tests"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh, which installs tests/requirements.txt into .venv-tests",
        python.display()
    );
    python
}

async fn run_client(relay: &RelayProc, token: &str, mode: &str) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/mcp_client.py");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python())
            .arg(&script)
            .arg(relay.route_url("db"))
            .arg(token)
            .arg(relay.ca())
            .arg(mode)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the Python client finished within 120s")
    .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed ({mode}):\n{stderr}"
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"))
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
