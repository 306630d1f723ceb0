//! Relay restarts do not wait on standing streams: a client holding a GET
//! event stream (as every MCP SDK does) does not hold a restart for the drain
//! timeout; its stream ends at once, cleanly, while a POST whose answer is
//! still streaming is drained to its end.

use std::time::{Duration, Instant};

use e2e::client::{full_body, read_until};
use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};
use http::Request;
use http_body_util::BodyExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restart_ends_standing_streams_and_drains_answers() {
    let up = Upstream::start("u").await;
    // The drain timeout is long, so waiting for it would show.
    let relay = RelayProc::start(&["--drain-timeout", "30s"]).await;
    let token = relay.token("a@x", true);
    let mut agent = AgentProc::start(
        &relay,
        &relay.token("a@x", false),
        "demo",
        &up.url(),
        "quic",
    )
    .await;
    let url = format!("{}/sse", relay.route_url("demo"));
    let request = |method: &str| {
        Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "text/event-stream")
            .body(full_body(""))
            .expect("request")
    };
    let client = HttpsClient::new(&relay.ca(), false);
    // A standing stream (GET) and a request whose answer streams (POST).
    let standing = client.send(request("GET")).await;
    assert_eq!(standing.status(), 200);
    let mut standing = standing.into_body();
    read_until(&mut standing, &mut String::new(), "event 0").await;
    let answer = client.send(request("POST")).await;
    assert_eq!(answer.status(), 200);
    let mut answer = answer.into_body();
    read_until(&mut answer, &mut String::new(), "event 0").await;

    let stopping = Instant::now();
    relay.proc.signal("TERM");
    // The standing stream ends at once, and cleanly.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match standing.frame().await {
                None => return Ok(()),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the standing stream ends within 5 s");
    let standing_ended = stopping.elapsed();
    assert_eq!(end, Ok(()), "the standing stream ends cleanly");

    // The POST's answer is still in flight: it completes.
    for _ in 0..4 {
        up.release();
    }
    let mut rest = String::new();
    read_until(&mut answer, &mut rest, "event 2").await;
    assert!(rest.contains("event 1"), "{rest}");
    assert!(
        tokio::time::timeout(Duration::from_secs(10), answer.frame())
            .await
            .expect("the answer ends")
            .is_none(),
        "the answer ends cleanly"
    );

    // The relay exits once the answer is delivered, long before its drain
    // timeout (the bound is generous for a loaded machine).
    let RelayProc {
        mut proc,
        addr,
        state,
        extra_args,
        ..
    } = relay;
    proc.wait_exit(Duration::from_secs(25)).await;
    let exited = stopping.elapsed();
    drop(proc);
    let extra: Vec<&str> = extra_args.iter().map(String::as_str).collect();
    let relay = RelayProc::start_with(state, &addr.to_string(), &extra).await;
    agent.wait_live().await;
    let client = HttpsClient::new(&relay.ca(), false);
    let echo = client
        .call(
            "POST",
            &format!("{}/echo", relay.route_url("demo")),
            Some(&token),
            "hi",
        )
        .await;
    let back = stopping.elapsed();
    eprintln!(
        "relay restart with a standing stream: stream ended after {standing_ended:?}, relay exited after {exited:?}, route back after {back:?}"
    );
    assert_eq!(echo.status, 200);
    assert!(
        exited < Duration::from_secs(10),
        "the relay exits well before its 30 s drain timeout: {exited:?}"
    );
}
