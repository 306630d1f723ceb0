//! Resource bounds (issue 7): request rate limits per identity and per
//! route (429 with Retry-After), and slow clients cut off by timeouts while
//! everyone else is served.

use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

struct Setup {
    relay: RelayProc,
    _agents: Vec<AgentProc>,
    _upstream: Upstream,
    http: HttpsClient,
}

/// A relay with `relay_args`, and routes `a` and `b` owned by alice, whose
/// agents allow bob too.
async fn setup(relay_args: &[&str]) -> Setup {
    let upstream = Upstream::start("u").await;
    let relay = RelayProc::start(relay_args).await;
    let agent_token = relay.token(ALICE, false);
    let mut agents = Vec::new();
    for route in ["a", "b"] {
        let mut a = AgentProc::spawn(
            &relay,
            &agent_token,
            route,
            &upstream.url(),
            "auto",
            &["--allow", BOB],
        );
        a.wait_live().await;
        agents.push(a);
    }
    let http = HttpsClient::new(&relay.ca(), false);
    Setup {
        relay,
        _agents: agents,
        _upstream: upstream,
        http,
    }
}

impl Setup {
    async fn call(&self, route: &str, token: &str) -> e2e::client::Answer {
        self.http
            .get(&format!("{}/id", self.relay.route_url(route)), Some(token))
            .await
    }
}

fn retry_after(a: &e2e::client::Answer) -> u64 {
    a.headers
        .get("retry-after")
        .expect("Retry-After on a 429")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_over_its_rate_gets_429_with_retry_after_and_others_are_served() {
    let s = setup(&["--rate-limit-identity", "3/min"]).await;
    let alice = s.relay.token(ALICE, true);
    let bob = s.relay.token(BOB, true);
    for _ in 0..3 {
        let a = s.call("a", &alice).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    // The limit is per identity, over every route.
    let over = s.call("b", &alice).await;
    assert_eq!(over.status, 429, "{}", over.text());
    let wait = retry_after(&over);
    assert!((1..=20).contains(&wait), "Retry-After {wait}");
    let v = over.json();
    assert_eq!(v["error"], "rate_limited");
    let msg = v["message"].as_str().expect("message");
    assert!(msg.contains("identity") && msg.contains("3/min"), "{msg}");
    // Bob has his own budget.
    let a = s.call("a", &bob).await;
    assert_eq!(a.status, 200, "{}", a.text());
    // The refusal is audited with its rule.
    let (code, out, err) = s.relay.admin(&["audit", "--decision", "deny", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rate-limit-identity"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_over_its_rate_gets_429_for_everyone_and_other_routes_are_served() {
    let s = setup(&["--rate-limit-route", "4/h"]).await;
    let alice = s.relay.token(ALICE, true);
    let bob = s.relay.token(BOB, true);
    for token in [&alice, &bob, &alice, &bob] {
        let a = s.call("a", token).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    for token in [&alice, &bob] {
        let over = s.call("a", token).await;
        assert_eq!(over.status, 429, "{}", over.text());
        // 4/h: one request every 15 minutes.
        let wait = retry_after(&over);
        assert!((800..=900).contains(&wait), "Retry-After {wait}");
        assert!(over.text().contains("route"), "{}", over.text());
    }
    let a = s.call("b", &alice).await;
    assert_eq!(a.status, 200, "{}", a.text());
}

#[test]
fn a_malformed_rate_is_refused_at_start() {
    let out = std::process::Command::new(e2e::procs::bin("relay"))
        .args(["serve", "--rate-limit-route", "10/fortnight"])
        .output()
        .expect("run relay");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid rate \"10/fortnight\": expected N/s, N/min or N/h"),
        "{err}"
    );
}

/// A TLS connection to the relay from `source` (a loopback address other
/// than the harness's 127.0.0.1, so per-address bounds are the test's own).
async fn tls_from(
    relay: &RelayProc,
    source: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().expect("addr"))?;
    let tcp = socket.connect(relay.addr).await?;
    let tls = tunnel::tls::client_config(Some(&relay.ca()), &[]).expect("tls config");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
}

/// Whether the relay closed `conn` (EOF or error) within `within`, while the
/// client keeps writing one header line every 300 ms.
async fn closed_while_trickling<S>(conn: &mut S, within: std::time::Duration) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 1024];
    while tokio::time::Instant::now() < deadline {
        if conn.write_all(b"X-Slow: 1\r\n").await.is_err() {
            return true;
        }
        match tokio::time::timeout(std::time::Duration::from_millis(300), conn.read(&mut buf)).await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An error response (e.g. 408) and then the close.
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_off_and_others_are_served() {
    use tokio::io::AsyncWriteExt;
    let relay = RelayProc::start(&["--header-read-timeout", "1s"]).await;
    let mut slow = tls_from(&relay, "127.0.0.2").await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n")
        .await
        .expect("write");
    let trickle =
        async { closed_while_trickling(&mut slow, std::time::Duration::from_secs(30)).await };
    let others = async {
        let http = HttpsClient::new(&relay.ca(), false);
        let a = http.get(&format!("{}/healthz", relay.url()), None).await;
        assert_eq!(a.status, 200);
    };
    let (closed, ()) = tokio::join!(trickle, others);
    assert!(
        closed,
        "a client still sending headers after 30 s kept its connection (--header-read-timeout 1s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_gets_408_and_nothing_is_forwarded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start("u").await;
    let relay = RelayProc::start(&["--body-read-timeout", "1s"]).await;
    let agent_token = relay.token(ALICE, false);
    let _agent = AgentProc::start_upstream(
        &relay,
        &agent_token,
        "mcp",
        &["--http", &upstream.url()],
        "auto",
    )
    .await;
    let token = relay.token(ALICE, true);
    let mut conn = tls_from(&relay, "127.0.0.3").await.expect("connect");
    let head = format!(
        "POST /mcp/mcp HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"jsonrpc\":"
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer 30 s after the body stalled");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(
        upstream.hits.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a request without its body reached the local server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_max_connections_per_ip() {
    let relay = RelayProc::start(&["--max-connections-per-ip", "3"]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            tls_from(&relay, "127.0.0.4")
                .await
                .expect("within the bound"),
        );
    }
    let refused = tls_from(&relay, "127.0.0.4").await;
    assert!(
        refused.is_err(),
        "a 4th connection from one address was accepted"
    );
    assert!(
        relay
            .proc
            .wait_stderr(
                "too many connections from one address",
                std::time::Duration::from_secs(10)
            )
            .await
    );
    // Other addresses are not affected.
    let http = HttpsClient::new(&relay.ca(), false);
    assert_eq!(
        http.get(&format!("{}/healthz", relay.url()), None)
            .await
            .status,
        200
    );
    // A closed connection frees its slot.
    held.pop();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if tls_from(&relay, "127.0.0.4").await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the freed slot never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `n` distinct QUIC Initial packets (each a new connection attempt with its
/// own connection id), captured from real quinn clients that never hear back.
async fn quic_initials(relay: &RelayProc, n: usize) -> Vec<Vec<u8>> {
    let tls = tunnel::tls::client_config(Some(&relay.ca()), &[protocol::ALPN]).expect("tls");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let config = quinn::ClientConfig::new(std::sync::Arc::new(crypto));
    let sink = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sink_addr = sink.local_addr().expect("addr");
    let mut initials = Vec::new();
    for _ in 0..n {
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        endpoint.set_default_client_config(config.clone());
        let connecting = endpoint.connect(sink_addr, "127.0.0.1").expect("connect");
        let mut buf = vec![0u8; 2048];
        let (len, _) =
            tokio::time::timeout(std::time::Duration::from_secs(10), sink.recv_from(&mut buf))
                .await
                .expect("an Initial")
                .expect("recv");
        initials.push(buf[..len].to_vec());
        drop(connecting);
        endpoint.close(0u32.into(), b"");
    }
    initials
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_half_open_quic_handshakes_is_bounded_and_agents_still_connect() {
    let upstream = Upstream::start("u").await;
    let relay = RelayProc::start(&["--max-quic-handshakes-per-ip", "4"]).await;
    // 200 handshakes from 127.0.0.5 that never get past the client's first
    // packet.
    let initials = quic_initials(&relay, 200).await;
    let mut flooders = Vec::new();
    for initial in &initials {
        let s = tokio::net::UdpSocket::bind("127.0.0.5:0")
            .await
            .expect("bind");
        s.send_to(initial, relay.addr).await.expect("send");
        flooders.push(s);
    }
    assert!(
        relay
            .proc
            .wait_stderr(
                "too many QUIC handshakes in progress",
                std::time::Duration::from_secs(10)
            )
            .await,
        "the flood was not bounded"
    );
    // An agent on another address connects over QUIC and serves meanwhile.
    let agent_token = relay.token(ALICE, false);
    let _agent = AgentProc::start(&relay, &agent_token, "q", &upstream.url(), "quic").await;
    let http = HttpsClient::new(&relay.ca(), false);
    let a = http
        .get(
            &format!("{}/id", relay.route_url("q")),
            Some(&relay.token(ALICE, true)),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    // The half-open handshakes time out (--handshake-timeout, 10 s) and the
    // address may handshake again.
    drop(flooders);
    let tls = tunnel::tls::client_config(Some(&relay.ca()), &[protocol::ALPN]).expect("tls");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.5:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let attempt = endpoint.connect(relay.addr, "127.0.0.1").expect("connect");
        if let Ok(Ok(conn)) = tokio::time::timeout(std::time::Duration::from_secs(5), attempt).await
        {
            conn.close(0u32.into(), b"done");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "127.0.0.5 could not handshake 60 s after its flood stopped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_server_answering_with_too_much_is_cut_off_and_the_route_keeps_working() {
    let upstream = Upstream::start("greedy").await;
    let relay = RelayProc::start(&[]).await;
    let agent_token = relay.token(ALICE, false);
    let mut agent = AgentProc::spawn_upstream(
        &relay,
        &agent_token,
        "greedy",
        &["--http", &format!("{}/greedy", upstream.url())],
        "auto",
        &["--max-response", "1048576"],
    );
    agent.wait_live().await;
    let token = relay.token(ALICE, true);
    let http = HttpsClient::new(&relay.ca(), false);
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let post = |path: &str| {
        http::Request::builder()
            .method("POST")
            .uri(format!("{}?as={path}", relay.route_url("greedy")))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(e2e::client::full_body(ping))
            .expect("request")
    };
    // A JSON answer that says its size: refused before anything is sent.
    let a = http.fetch(post("/json-sized/2000000")).await;
    assert_eq!(a.status, 502, "{}", a.text());
    assert!(
        a.text()
            .contains("over the agent's --max-response of 1048576"),
        "{}",
        a.text()
    );
    // 200 MB streamed without a length, and one 200 MB event: cut off at the
    // cap, an error for the client rather than a message that looks whole.
    for path in ["/json-bytes/200000000", "/sse-big/200000000"] {
        let r = http.try_fetch(post(path)).await;
        match r {
            Err(e) => assert!(!e.is_empty()),
            Ok(a) => panic!(
                "{path}: a {} answer of {} bytes arrived whole",
                a.status,
                a.body.len()
            ),
        }
    }
    assert!(
        agent
            .proc
            .wait_stderr(
                "went over --max-response",
                std::time::Duration::from_secs(10)
            )
            .await
    );
    // Answers within the cap, and the route, are unaffected.
    let a = http.fetch(post("/json-bytes/1000")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body.len(), 1000);
}
