//! First errors over HTTP/2 reach curl intact: the relay's 401 (no token),
//! 404 (no such route) and 503 (no agent) answer a POST with a body, and the
//! real `curl` binary over HTTP/2 must print them, every time, instead of
//! "Stream error in the HTTP/2 framing layer" (a stream reset under the
//! answer because the body was never read). Half the tries send a 16 KiB body
//! at a limited rate, which makes the race certain rather than a matter of
//! the machine's speed.

use e2e::{AgentProc, RelayProc, Upstream};

const TRIES: usize = 20;
const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"curl","version":"7"}}}"#;

/// Runs curl over HTTP/2 with the README's kind of request (every other try
/// with a larger body sent at a limited rate, so that the answer is ready
/// while the body is still on its way); returns its exit code, the status
/// it saw, and the body it printed.
async fn curl(
    relay: &RelayProc,
    url: &str,
    token: Option<&str>,
    slow: bool,
) -> (i32, String, String) {
    let body = if slow {
        BODY.replace(
            r#""capabilities":{}"#,
            &format!(r#""capabilities":{{}},"pad":"{}""#, "x".repeat(16 * 1024)),
        )
    } else {
        BODY.to_owned()
    };
    let mut cmd = tokio::process::Command::new("curl");
    if slow {
        cmd.arg("--limit-rate").arg("64k");
    }
    cmd.arg("--http2")
        .arg("--silent")
        .arg("--show-error")
        .arg("--cacert")
        .arg(relay.ca())
        .arg("-H")
        .arg("Content-Type: application/json")
        .arg("-H")
        .arg("Accept: application/json, text/event-stream")
        .arg("-d")
        .arg(body)
        .arg("-w")
        .arg("\n%{http_version} %{http_code}");
    if let Some(t) = token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    let out = cmd.arg(url).output().await.expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (
        out.status.code().unwrap_or(-1),
        status.to_owned(),
        format!("{body}{stderr}"),
    )
}

async fn every_try_shows(
    relay: &RelayProc,
    url: &str,
    token: Option<&str>,
    status: &str,
    code: &str,
) {
    let mut failures = Vec::new();
    for i in 0..TRIES {
        let (exit, seen, body) = curl(relay, url, token, i % 2 == 1).await;
        let ok = exit == 0
            && seen == format!("2 {status}")
            && serde_json::from_str::<serde_json::Value>(&body)
                .is_ok_and(|v| v["error"] == code && v["message"].is_string());
        if !ok {
            failures.push(format!("exit {exit}, {seen:?}: {body}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {TRIES} curl runs did not show the relay's {status} {code}: {failures:#?}",
        failures.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_http2_sees_the_relays_first_errors() {
    let relay = RelayProc::start(&[]).await;
    let token = relay.token("a@x", true);
    let up = Upstream::start("u").await;
    // The route is claimed, then its agent leaves: 503 "no agent".
    let mut agent = AgentProc::start(
        &relay,
        &relay.token("a@x", false),
        "demo",
        &up.url(),
        "quic",
    )
    .await;
    agent.proc.signal("TERM");
    agent
        .proc
        .wait_exit(std::time::Duration::from_secs(15))
        .await;

    let url = relay.route_url("demo");
    every_try_shows(&relay, &url, None, "401", "unauthorized").await;
    every_try_shows(
        &relay,
        &url,
        Some("dbct_not_a_token"),
        "401",
        "invalid_token",
    )
    .await;
    every_try_shows(
        &relay,
        &relay.route_url("nosuch"),
        Some(&token),
        "404",
        "unknown_route",
    )
    .await;
    every_try_shows(&relay, &url, Some(&token), "503", "agent_unavailable").await;
}
