//! Requests and responses through relay and agent: headers, streaming, bulk,
//! concurrency.

use std::time::Duration;

use bytes::Bytes;
use e2e::upstream::pattern;
use e2e::{rss_kib, AgentProc, HttpsClient, RelayProc, Upstream};
use http::Request;
use http_body_util::BodyExt;

/// A JSON-RPC message: JSON POSTs are read and classified by the relay.
const PING: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

struct Setup {
    relay: RelayProc,
    agent: AgentProc,
    upstream: Upstream,
    client_token: String,
}

async fn setup(transport: &str) -> Setup {
    let upstream = Upstream::start("u1").await;
    let relay = RelayProc::start(&[]).await;
    let agent_token = relay.token("alice@example.com", false);
    let client_token = relay.token("alice@example.com", true);
    let agent = AgentProc::start(&relay, &agent_token, "demo", &upstream.url(), transport).await;
    Setup {
        relay,
        agent,
        upstream,
        client_token,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_cross_with_the_right_headers() {
    let s = setup("auto").await;
    assert_eq!(s.agent.url, s.relay.route_url("demo"));
    for http2 in [false, true] {
        let client = HttpsClient::new(&s.relay.ca(), http2);
        let url = format!("{}/echo/x?q=1", s.relay.route_url("demo"));
        let mut req = Request::builder()
            .method("POST")
            .uri(&url)
            .header("authorization", format!("Bearer {}", s.client_token))
            .header("content-type", "application/json")
            .header("x-forwarded-host", "evil.example")
            .header("x-custom", "kept");
        if !http2 {
            req = req
                .header("connection", "keep-alive, x-secret-hop")
                .header("x-secret-hop", "1");
        }
        let body = http_body_util::Full::new(Bytes::from_static(PING))
            .map_err(|never| match never {})
            .boxed_unsync();
        let resp = client.send(req.body(body).expect("req")).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().contains_key("x-request-id"));
        assert_eq!(resp.headers()["x-upstream"], "u1");
        let v: serde_json::Value =
            serde_json::from_slice(&resp.into_body().collect().await.expect("body").to_bytes())
                .expect("json");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/echo/x?q=1");
        assert_eq!(v["body"], std::str::from_utf8(PING).expect("utf8"));
        let h = &v["headers"];
        assert!(
            h.get("authorization").is_none(),
            "the client's token reached the laptop: {h}"
        );
        assert!(
            h.get("x-secret-hop").is_none(),
            "a Connection-listed header crossed: {h}"
        );
        assert_eq!(h["x-custom"], "kept");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], s.relay.addr.to_string());
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(
            h["host"],
            s.upstream.addr.to_string(),
            "the local server sees its own Host"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_one_by_one() {
    let s = setup("auto").await;
    let client = HttpsClient::new(&s.relay.ca(), false);
    let req = Request::builder()
        .uri(format!("{}/sse", s.relay.route_url("demo")))
        .header("authorization", format!("Bearer {}", s.client_token))
        .header("accept", "text/event-stream")
        .body(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("req");
    let resp = client.send(req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(
        resp.headers()["x-accel-buffering"],
        "no",
        "proxies must not buffer SSE"
    );
    let mut body = resp.into_body();
    let mut seen = String::new();
    for k in 0..3 {
        // The upstream sends event k+1 only after we release it, so event k
        // must reach us while the upstream is still holding the rest back.
        let want = format!("data: event {k}\n\n");
        e2e::client::read_until(&mut body, &mut seen, &want).await;
        assert!(
            !seen.contains(&format!("event {}", k + 1)),
            "event {} came before it was released",
            k + 1
        );
        s.upstream.release();
    }
    // The stream then ends cleanly.
    while let Some(f) = body.frame().await {
        f.expect("clean end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_each_way_in_bounded_memory() {
    const SIZE: u64 = 50 * 1024 * 1024;
    let s = setup("auto").await;
    let client = HttpsClient::new(&s.relay.ca(), false);
    let (relay_before, _) = rss_kib(s.relay.proc.pid);
    let (agent_before, _) = rss_kib(s.agent.proc.pid);

    // Download, read slowly at first so that buffering anywhere would show.
    let req = Request::builder()
        .uri(format!("{}/bytes/{SIZE}", s.relay.route_url("demo")))
        .header("authorization", format!("Bearer {}", s.client_token))
        .body(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("req");
    let resp = client.send(req).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0u64;
    let mut bad = 0u64;
    let mut paused = false;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.expect("frame").into_data() {
            for b in d.iter() {
                if *b != pattern(got) {
                    bad += 1;
                }
                got += 1;
            }
        }
        if !paused && got > 1024 * 1024 {
            paused = true;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert_eq!(got, SIZE);
    assert_eq!(bad, 0, "corrupted bytes");

    // Upload, streamed (no content-length: chunked).
    let stream = futures::stream::unfold(0u64, |sent| async move {
        if sent >= SIZE {
            return None;
        }
        let n = (SIZE - sent).min(256 * 1024);
        let chunk: Vec<u8> = (sent..sent + n).map(pattern).collect();
        Some((
            Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(chunk))),
            sent + n,
        ))
    });
    let req = Request::builder()
        .method("POST")
        .uri(format!("{}/upload", s.relay.route_url("demo")))
        .header("authorization", format!("Bearer {}", s.client_token))
        .body(http_body_util::StreamBody::new(stream).boxed_unsync())
        .expect("req");
    let resp = client.send(req).await;
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.expect("body").to_bytes())
            .expect("json");
    assert_eq!(v["len"], SIZE);
    assert_eq!(v["mismatches"], 0);

    let (_, relay_peak) = rss_kib(s.relay.proc.pid);
    let (_, agent_peak) = rss_kib(s.agent.proc.pid);
    eprintln!("relay rss {relay_before} KiB -> peak {relay_peak} KiB; agent {agent_before} -> {agent_peak} KiB");
    // 50 MiB passed each way; neither side may have held a large part of it.
    let bound = 32 * 1024;
    assert!(
        relay_peak < relay_before + bound,
        "relay grew from {relay_before} to {relay_peak} KiB"
    );
    assert!(
        agent_peak < agent_before + bound,
        "agent grew from {agent_before} to {agent_peak} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_each_get_their_own_answer() {
    let s = setup("auto").await;
    let client = HttpsClient::new(&s.relay.ca(), true);
    let base = s.relay.route_url("demo");
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let client = client.clone();
        let url = format!("{base}/echo/{i}");
        let token = s.client_token.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!("request-{i}-{}", "x".repeat((i as usize * 37) % 3000));
            let a = client.call("POST", &url, Some(&token), body.clone()).await;
            assert_eq!(a.status, 200, "{}", a.text());
            let v = a.json();
            assert_eq!(v["path"], format!("/echo/{i}"));
            assert_eq!(v["body"], body);
        }));
    }
    for t in tasks {
        t.await.expect("request task");
    }
    assert!(s.upstream.hits.load(std::sync::atomic::Ordering::Relaxed) >= 200);
}
