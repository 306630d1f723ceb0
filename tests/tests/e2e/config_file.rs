//! `relay serve --config relay.toml` and `relay config check`, with the real
//! binaries: a relay configured by its file forwards a request from a real
//! agent; flags and environment variables win over the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use e2e::procs::bin;
use e2e::{AgentProc, HttpsClient, RelayProc, TempDir, Upstream};
use http::Request;
use http_body_util::BodyExt;

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// A config file in its own directory: loopback, port 0, state in `state`,
/// self-signed, then `more`.
fn write_config(state: &TempDir, more: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new("config");
    let path = dir.path().join("relay.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = {:?}\nkeepalive_interval = \"2s\"\n\
         drain_timeout = \"2s\"\n{more}\n[tls]\nself_signed = true\n",
        state.path().display().to_string()
    );
    std::fs::write(&path, text).expect("write relay.toml");
    (dir, path)
}

async fn post(client: &HttpsClient, url: &str, token: &str, body: String) -> (u16, String) {
    let req = Request::builder()
        .method("POST")
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            http_body_util::Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("request");
    let a = client.fetch(req).await;
    (a.status.as_u16(), a.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_configured_by_its_file_forwards_a_request() {
    let state = Arc::new(TempDir::new("relay"));
    // A setting only the file gives, and that requests show: a rate limit;
    // and two threads instead of the default one, which serve the same.
    let (_dir, config) = write_config(
        &state,
        "threads = 2\n[limits]\nrate_limit_route = \"1/min\"\n",
    );
    let relay = RelayProc::start_with_config(state, &config, &[], &[]).await;
    assert_eq!(
        runtime_threads(&relay).await,
        2,
        "the file's threads = 2 is not in force"
    );
    let upstream = Upstream::start("u1").await;
    let agent_token = relay.token("alice@example.com", false);
    let client_token = relay.token("alice@example.com", true);
    let agent = AgentProc::start(&relay, &agent_token, "demo", &upstream.url(), "auto").await;
    assert_eq!(agent.url, relay.route_url("demo"));

    let client = HttpsClient::new(&relay.ca(), false);
    let url = format!("{}/echo", relay.route_url("demo"));
    let (status, body) = post(&client, &url, &client_token, PING.into()).await;
    assert_eq!(status, 200, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        echoed["body"], PING,
        "the upstream saw another body: {body}"
    );

    let (status, body) = post(&client, &url, &client_token, PING.into()).await;
    assert_eq!(
        status, 429,
        "the file's rate_limit_route is not in force: {body}"
    );
}

/// The public URL the relay announced ("listening on … as URL").
fn announced_url(relay: &RelayProc) -> String {
    let lines = relay.proc.stdout.lock().expect("lock").clone();
    lines
        .iter()
        .find_map(|l| l.split(" as ").nth(1))
        .unwrap_or_else(|| panic!("no public URL in {lines:?}"))
        .to_owned()
}

/// The threads the relay's runtime has, as its start line says
/// (`relay listening … threads=N`): the whole number, so that 12 is not
/// taken for 1.
async fn runtime_threads(relay: &RelayProc) -> usize {
    assert!(
        relay
            .proc
            .wait_stderr("relay listening", Duration::from_secs(5))
            .await,
        "no start line"
    );
    let text = relay.proc.stderr_text();
    let line = text
        .lines()
        .find(|l| l.contains("relay listening"))
        .expect("the start line");
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("threads="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no threads=N in {line:?}"))
}

/// Whether every log line on stderr is a JSON object.
fn logs_are_json(relay: &RelayProc) -> bool {
    let lines = relay.proc.stderr.lock().expect("lock").clone();
    assert!(!lines.is_empty(), "the relay logged nothing");
    lines.iter().all(|l| l.starts_with('{'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_and_environment_win_over_the_file() {
    let state = Arc::new(TempDir::new("relay"));
    let (_dir, config) = write_config(
        &state,
        "public_url = \"https://from-file.test\"\nlog_format = \"json\"\n",
    );

    // The file alone.
    let relay = RelayProc::start_with_config(state.clone(), &config, &[], &[]).await;
    assert_eq!(announced_url(&relay), "https://from-file.test");
    assert!(relay.proc.wait_stderr("{", Duration::from_secs(5)).await);
    assert!(logs_are_json(&relay), "log_format = \"json\" is ignored");
    drop(relay);

    // DRAWBRIDGE_PUBLIC_URL wins over the file.
    let env = [("DRAWBRIDGE_PUBLIC_URL", "https://from-env.test")];
    let relay = RelayProc::start_with_config(state.clone(), &config, &[], &env).await;
    assert_eq!(announced_url(&relay), "https://from-env.test");
    drop(relay);

    // A flag wins over both; --log-format too.
    let flags = [
        "--public-url",
        "https://from-flag.test",
        "--log-format",
        "text",
    ];
    let relay = RelayProc::start_with_config(state.clone(), &config, &flags, &env).await;
    assert_eq!(announced_url(&relay), "https://from-flag.test");
    assert!(relay.proc.wait_stderr("INFO", Duration::from_secs(5)).await);
    // No threads in the file or flags: the default, one.
    assert_eq!(
        runtime_threads(&relay).await,
        1,
        "not on one thread by default"
    );
    assert!(!logs_are_json(&relay), "--log-format text lost to the file");
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../relay/tests/fixtures/config")
        .join(name)
}

fn config_check(file: &Path) -> (i32, String, String) {
    let out = std::process::Command::new(bin("relay"))
        .args(["config", "check"])
        .arg(file)
        .output()
        .expect("run relay config check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn relay_config_check_passes_a_good_file_and_names_the_line_of_a_bad_one() {
    let good = fixture("good.toml");
    let (code, out, err) = config_check(&good);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("{}: OK (listen 127.0.0.1:8443,", good.display())),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "not one line: {out}");

    let bad = fixture("bad-rate.toml");
    let (code, out, err) = config_check(&bad);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        err,
        format!(
            "relay: {}:5:20: limits.rate_limit_route: invalid rate \"10/day\": expected N/s, \
             N/min or N/h, e.g. 600/min\n",
            bad.display()
        )
    );
    assert_eq!(out, "");
}

#[test]
fn a_number_of_threads_out_of_range_is_refused_with_its_range() {
    let dir = TempDir::new("config");
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, "threads = 0\n").expect("write relay.toml");
    let (code, out, err) = config_check(&file);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("threads: invalid threads 0: expected a number of threads from 1 to 1024"),
        "{err}"
    );
    let out = std::process::Command::new(bin("relay"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--self-signed",
            "--threads",
            "1025",
        ])
        .output()
        .expect("run relay serve");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "invalid value '1025' for '--threads <N>': expected a number of threads from 1 to 1024"
        ),
        "{err}"
    );
}

#[test]
fn the_deploy_example_passes_relay_config_check() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/relay.toml");
    let (code, out, err) = config_check(&example);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": OK ("), "{out}");
}
