//! `agent connect` without `--relay`: one command, a complete local setup.
//! And `--log-format json` on both binaries.

use std::time::Duration;

use e2e::procs::{bin, Proc};
use e2e::{HttpsClient, RelayProc, TempDir, Upstream};

fn field(line: &str, label: &str) -> String {
    line.split(label)
        .nth(1)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| panic!("no {label:?} in {line:?}"))
}

async fn start_embedded(state: &TempDir, upstream: &str) -> (Proc, String, String, String) {
    let args: Vec<String> = [
        "connect",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        &state.path().display().to_string(),
        "--http",
        upstream,
        "--plain-http",
        "--route",
        "demo",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = Proc::spawn("agent", &bin("agent"), &args, &[]);
    p.wait_stdout("embedded relay running at", Duration::from_secs(30))
        .await;
    let ca = field(
        &p.wait_stdout("trust its CA:", Duration::from_secs(5)).await,
        "trust its CA:",
    );
    let token = field(
        &p.wait_stdout("client token:", Duration::from_secs(5)).await,
        "client token:",
    );
    let live = p.wait_stdout("is live at", Duration::from_secs(30)).await;
    let url = live
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .expect("url")
        .to_owned();
    (p, ca, token, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_runs_relay_and_agent_and_keeps_its_token() {
    let up = Upstream::start("laptop").await;
    let state = TempDir::new("embedded");
    let (mut p, ca, token, url) = start_embedded(&state, &up.url()).await;
    assert!(token.starts_with("dbct_"), "{token}");
    let client = HttpsClient::new(std::path::Path::new(&ca), false);
    let a = client
        .call("POST", &format!("{url}/echo"), Some(&token), "hello")
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["body"], "hello");
    assert_eq!(client.get(&url, None).await.status, 401);

    // Stopped and started again with the same state, the same client token works.
    p.signal("INT");
    assert_eq!(p.wait_exit(Duration::from_secs(20)).await, Some(0));
    let (_p2, ca2, token2, url2) = start_embedded(&state, &up.url()).await;
    assert_eq!(token2, token, "the embedded relay keeps its client token");
    let client = HttpsClient::new(std::path::Path::new(&ca2), false);
    let a = client
        .call("POST", &format!("{url2}/echo"), Some(&token), "again")
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(&["--log-format", "json"]).await;
    let token = relay.token("a@x", false);
    let args: Vec<String> = [
        "--log-format",
        "json",
        "connect",
        "--relay",
        &relay.url(),
        "--ca-cert",
        &relay.ca().display().to_string(),
        "--http",
        &up.url(),
        "--plain-http",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut agent = Proc::spawn(
        "agent",
        &bin("agent"),
        &args,
        &[("DRAWBRIDGE_TOKEN", token.as_str())],
    );
    agent
        .wait_stdout("is live at", Duration::from_secs(30))
        .await;
    assert!(
        relay
            .proc
            .wait_stderr("agent connected", Duration::from_secs(10))
            .await
    );
    assert!(
        agent
            .wait_stderr("tunnel established", Duration::from_secs(10))
            .await
    );
    for (name, text) in [
        ("relay", relay.proc.stderr_text()),
        ("agent", agent.stderr_text()),
    ] {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "{name} logged nothing");
        for l in lines {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {l}"));
            assert!(
                v.get("level").is_some() && v.get("timestamp").is_some(),
                "{name}: {l}"
            );
        }
    }
    assert!(
        !relay.proc.stderr_text().contains(&token),
        "the relay never logs an agent token"
    );
}
