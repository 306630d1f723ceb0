//! The admin listener: `/metrics` counts exactly the traffic a test made,
//! `/healthz` and `/readyz` answer.

use std::time::Duration;

use bytes::Bytes;
use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};
use http::Request;

fn org_policy() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/policies/org-no-attach.cedar")
        .display()
        .to_string()
}

async fn post(
    client: &HttpsClient,
    url: &str,
    token: &str,
    body: &'static [u8],
) -> serde_json::Value {
    let req = Request::builder()
        .method("POST")
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(e2e::client::full_body(Bytes::from_static(body)))
        .expect("request");
    let a = client.fetch(req).await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_traffic_the_test_made() {
    let up = Upstream::start("m").await;
    let policy = org_policy();
    let relay = RelayProc::start(&["--policy", &policy]).await;
    let (status, body) = relay.admin_get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = relay.admin_get("/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));

    let _agent = AgentProc::start_upstream(
        &relay,
        &relay.token("alice@x", false),
        "demo",
        &["--http", &format!("{}/echo", up.url())],
        "quic",
    )
    .await;
    let token = relay.token("alice@x", true);
    let client = HttpsClient::new(&relay.ca(), false);
    let url = relay.route_url("demo");

    const ALLOWED: usize = 5;
    const DENIED: usize = 3;
    let read = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_query","arguments":{"query":"SELECT * FROM customers"}}}"#;
    let attach = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_query","arguments":{"query":"ATTACH DATABASE '/tmp/x.db' AS x"}}}"#;
    for _ in 0..ALLOWED {
        let v = post(&client, &url, &token, read).await;
        assert!(v.get("error").is_none(), "{v}");
    }
    for _ in 0..DENIED {
        let v = post(&client, &url, &token, attach).await;
        assert_eq!(v["error"]["code"], -32001, "{v}");
    }
    // A made-up route is counted, under a name the client did not choose.
    let nosuch = client
        .call(
            "POST",
            &relay.route_url("made-up-route"),
            Some(&token),
            "{}",
        )
        .await;
    assert_eq!(nosuch.status, 404, "{}", nosuch.text());
    // The OAuth token endpoint refuses a bogus code.
    let refused = client
        .fetch(
            Request::builder()
                .method("POST")
                .uri(format!("{}/oauth/token", relay.url()))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(e2e::client::full_body(Bytes::from_static(
                    b"grant_type=authorization_code&code=bogus&client_id=nobody&code_verifier=x&redirect_uri=http://127.0.0.1/cb",
                )))
                .expect("request"),
        )
        .await;
    assert!(refused.status.is_client_error(), "{}", refused.text());

    let m = |s: &'static str| relay.metric(s);
    assert_eq!(
        m(r#"drawbridge_requests_total{route="demo",method="tools/call",decision="allow"}"#).await,
        Some(ALLOWED as f64)
    );
    assert_eq!(
        m(r#"drawbridge_requests_total{route="demo",method="tools/call",decision="deny"}"#).await,
        Some(DENIED as f64)
    );
    assert_eq!(
        m(r#"drawbridge_requests_total{route="demo",method="tools/call",decision="error"}"#).await,
        None,
        "no errors"
    );
    assert_eq!(
        m(r#"drawbridge_requests_total{route="_unknown",method="POST",decision="deny"}"#).await,
        Some(1.0)
    );
    let (_, text) = relay.admin_get("/metrics").await;
    assert!(!text.contains("made-up-route"), "{text}");
    assert_eq!(
        m(r#"drawbridge_request_duration_seconds_count{route="demo"}"#).await,
        Some((ALLOWED + DENIED) as f64)
    );
    assert_eq!(
        m("drawbridge_policy_evaluation_seconds_count").await,
        Some((ALLOWED + DENIED) as f64)
    );
    assert_eq!(
        m(r#"drawbridge_agents_connected{transport="quic"}"#).await,
        Some(1.0)
    );
    assert_eq!(
        m(r#"drawbridge_agents_connected{transport="tcp"}"#).await,
        Some(0.0)
    );
    // Only the allowed calls crossed the tunnel, each way.
    let to_agent = m(r#"drawbridge_tunnel_bytes_total{direction="to_agent"}"#)
        .await
        .expect("to_agent");
    assert_eq!(to_agent, (ALLOWED * read.len()) as f64);
    let from_agent = m(r#"drawbridge_tunnel_bytes_total{direction="from_agent"}"#)
        .await
        .expect("from_agent");
    assert!(from_agent > 0.0, "{from_agent}");
    assert_eq!(
        m(r#"drawbridge_oauth_events_total{kind="token_refused"}"#).await,
        Some(1.0)
    );
    let expiry = m("drawbridge_certificate_expiry_timestamp_seconds")
        .await
        .expect("expiry");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        expiry > now,
        "the self-signed certificate expires in the future: {expiry}"
    );
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );

    // An agent leaving is counted down.
    drop(_agent);
    let mut gone = false;
    for _ in 0..200 {
        if m(r#"drawbridge_agents_connected{transport="quic"}"#).await == Some(0.0) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the agents gauge falls back to 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_can_be_turned_off() {
    let relay = RelayProc::start(&["--admin-listen", "off"]).await;
    assert!(relay.admin.is_none());
    let out = relay.proc.stdout.lock().expect("lock").join("\n");
    assert!(!out.contains("admin listener"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_503_while_the_relay_drains() {
    let up = Upstream::start("d").await;
    let mut relay = RelayProc::start(&["--drain-timeout", "3s"]).await;
    let _agent = AgentProc::start(
        &relay,
        &relay.token("alice@x", false),
        "demo",
        &up.url(),
        "quic",
    )
    .await;
    let token = relay.token("alice@x", true);
    let client = HttpsClient::new(&relay.ca(), false);
    // A request that never ends keeps the drain going.
    let hang = tokio::spawn({
        let url = format!("{}/hang", relay.route_url("demo"));
        async move { client.get(&url, Some(&token)).await }
    });
    let mut in_flight = false;
    for _ in 0..200 {
        if up.hits.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            in_flight = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(in_flight, "the hanging request reached the laptop");
    assert_eq!(relay.admin_get("/readyz").await.0, 200);

    relay.proc.signal("TERM");
    let mut draining = false;
    for _ in 0..100 {
        let (status, body) = relay.admin_get("/readyz").await;
        if status == 503 {
            assert_eq!(body, "draining\n");
            draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(draining, "/readyz turns 503 during the drain");
    assert_eq!(relay.admin_get("/healthz").await.0, 200, "still alive");
    relay.proc.wait_exit(Duration::from_secs(20)).await;
    hang.abort();
}

/// `method path` on the admin listener: (status, head, body).
async fn admin_request(relay: &RelayProc, method: &str, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = relay.admin.expect("the relay has an admin listener");
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the admin listener");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// The admin listener takes GET and HEAD on any path, and says so (`Allow`
/// is new); an unknown path is 404 with the list of the known ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_takes_get_and_head() {
    let relay = RelayProc::start(&[]).await;
    for path in ["/metrics", "/healthz", "/nothing"] {
        for method in ["POST", "DELETE", "OPTIONS"] {
            let (status, head, body) = admin_request(&relay, method, path).await;
            assert_eq!(
                (status, body.as_str()),
                (405, "only GET\n"),
                "{method} {path}"
            );
            assert!(
                head.contains("\r\nallow: get, head"),
                "{method} {path}: {head}"
            );
        }
    }
    let (status, head, body) = admin_request(&relay, "HEAD", "/healthz").await;
    assert_eq!((status, body.as_str()), (200, ""), "{head}");
    let (status, head, body) = admin_request(&relay, "GET", "/nothing").await;
    assert_eq!(
        (status, body.as_str()),
        (404, "not found: /metrics, /healthz, /readyz\n"),
        "{head}"
    );
    assert!(
        head.contains("content-type: text/plain; charset=utf-8"),
        "{head}"
    );
    let (status, head, _) = admin_request(&relay, "GET", "/metrics").await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
}
