//! The relay's hidden `--bench-disable-policy-and-audit` flag (for `bench/`
//! only): not in `relay serve --help`, loud at startup, and with it the
//! relay neither decides nor audits JSON-RPC messages.

use std::sync::atomic::Ordering;
use std::time::Duration;

use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};
use http::Request;

const FLAG: &str = "--bench-disable-policy-and-audit";

/// A call the organisation's policy (`org/no-attach`) refuses.
const ATTACH: &[u8] = br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"read_query","arguments":{"query":"ATTACH DATABASE '/tmp/x.db' AS x"}}}"#;

fn org_policy() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/policies/org-no-attach.cedar")
        .display()
        .to_string()
}

#[test]
fn the_flag_is_hidden_from_serve_help() {
    let out = std::process::Command::new(e2e::procs::bin("relay"))
        .args(["serve", "--help"])
        .output()
        .expect("run relay serve --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--state-dir"), "not the serve help: {help}");
    assert!(!help.contains("bench"), "the flag shows in --help: {help}");
}

/// POSTs `body` to `/mcp/demo` (served by the upstream's `/echo`) with `token`.
async fn post(
    client: &HttpsClient,
    relay: &RelayProc,
    token: &str,
    body: &'static [u8],
) -> e2e::client::Answer {
    let req = Request::builder()
        .method("POST")
        .uri(relay.route_url("demo"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(e2e::client::full_body(body))
        .expect("request");
    client.fetch(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_flag_a_refused_call_goes_through_unaudited_and_the_relay_warns() {
    let up = Upstream::start("u").await;
    let policy = org_policy();
    let relay = RelayProc::start(&["--policy", &policy, FLAG]).await;
    assert!(
        relay
            .proc
            .wait_stderr("NOT audited", Duration::from_secs(5))
            .await,
        "no startup warning:\n{}",
        relay.proc.stderr_text()
    );
    let warning = relay
        .proc
        .stderr
        .lock()
        .expect("lock")
        .iter()
        .find(|l| l.contains("NOT audited"))
        .cloned()
        .unwrap_or_default();
    assert!(
        warning.contains("WARN") && warning.contains(FLAG),
        "the warning is loud and names the flag: {warning}"
    );

    // The agent decides with the owner's policy only (alice may do
    // anything on her route): what is left is the organisation's policy,
    // which the relay no longer applies.
    let _agent = AgentProc::start_upstream(
        &relay,
        &relay.token("alice@x", false),
        "demo",
        &["--http", &format!("{}/echo", up.url())],
        "auto",
    )
    .await;
    let token = relay.token("alice@x", true);
    let client = HttpsClient::new(&relay.ca(), false);
    let before = up.hits.load(Ordering::Relaxed);
    let a = post(&client, &relay, &token, ATTACH).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let echoed = a.json();
    assert!(
        echoed["body"]
            .as_str()
            .is_some_and(|b| b.contains("ATTACH DATABASE")),
        "the local server got the call: {}",
        a.text()
    );
    assert_eq!(up.hits.load(Ordering::Relaxed), before + 1);

    // Bearer tokens are still checked, and a refusal before the policy is
    // still audited: written before its answer, like the call's would be.
    let anon = client.get(&relay.route_url("demo"), None).await;
    assert_eq!(anon.status, 401);
    let log = std::fs::read_to_string(relay.state.path().join("audit.jsonl")).unwrap_or_default();
    assert!(
        log.contains("\"authentication\""),
        "the 401 is audited: {log}"
    );
    assert!(
        !log.contains("tools/call") && !log.contains("\"allow\""),
        "the call was audited: {log}"
    );
}
