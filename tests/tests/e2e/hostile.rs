//! Hostile and broken peers on the relay's one port.
//!
//! Whatever a stranger sends — garbage bytes on TCP or UDP, a tunnel client of
//! the wrong protocol version, frames that do not decode, a length prefix that
//! asks for 2 GiB — the relay must end *that* connection, promptly, and nothing
//! else. Every test therefore starts a healthy agent first and proves after the
//! hostile action that the very same session (no reconnect) still serves.
//! And older agents (protocol versions 2, 3 and 4) get exchange heads in their
//! own version.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e::{AgentProc, HttpsClient, RelayProc, Upstream};
use protocol::{
    FrameLimit, Hello, HelloReply, RefusalCode, RouteOffer, UpstreamKind, ALPN, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::compat::TokioAsyncReadCompatExt;
use tunnel::mux::{MuxConnection, Side};
use tunnel::quic::QuicSettings;
use tunnel::{RecvHalf, SendHalf, TunnelConnection};

/// The relay's tunnel handshake timeout is 10 s (not configurable from the
/// command line): a relay that did not notice the garbage would still end the
/// connection after 10 s. Everything the relay must detect has to happen well
/// before that, or the test could not tell detection from a timeout.
const PROMPT: Duration = Duration::from_secs(5);

/// A name in the self-signed certificate (relay/src/certs.rs adds
/// `localhost`, `127.0.0.1` and `::1` to every certificate it issues).
const SERVER_NAME: &str = "localhost";

// ---------------------------------------------------------------------------
// The healthy agent every test keeps an eye on.

struct Healthy {
    agent: AgentProc,
    client_token: String,
    _upstream: Upstream,
}

impl Healthy {
    /// Starts an agent of alice@example.com serving route `demo` over
    /// `transport`, and checks that it serves before anything hostile happens.
    async fn start(relay: &RelayProc, transport: &str) -> Healthy {
        let upstream = Upstream::start("healthy").await;
        let agent_token = relay.token("alice@example.com", false);
        let agent = AgentProc::start(relay, &agent_token, "demo", &upstream.url(), transport).await;
        assert_eq!(agent.last_transport(), transport);
        let healthy = Healthy {
            agent,
            client_token: relay.token("alice@example.com", true),
            _upstream: upstream,
        };
        healthy.assert_serves(relay, "before").await;
        healthy
    }

    /// A request through the relay reaches the healthy agent's upstream, over
    /// the session it opened at the start (the agent never had to reconnect),
    /// and the relay did not panic anywhere.
    async fn assert_serves(&self, relay: &RelayProc, when: &str) {
        let client = HttpsClient::new(&relay.ca(), false);
        let body = format!("healthy request {when} the hostile peer");
        let url = format!("{}/echo", relay.route_url("demo"));
        let answer = timeout(
            Duration::from_secs(20),
            client.call("POST", &url, Some(&self.client_token), body.clone()),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "healthy request {when} the hostile peer got no answer; relay stderr:\n{}",
                relay.proc.stderr_text()
            )
        });
        assert_eq!(
            answer.status,
            200,
            "healthy request {when} the hostile peer failed: {}; relay stderr:\n{}",
            answer.text(),
            relay.proc.stderr_text()
        );
        let json = answer.json();
        assert_eq!(json["body"], body.as_str());
        assert_eq!(json["id"], "healthy");
        let lives = self
            .agent
            .proc
            .stdout
            .lock()
            .expect("lock")
            .iter()
            .filter(|l| l.contains("is live at"))
            .count();
        assert_eq!(
            lives,
            1,
            "the healthy agent had to reconnect ({when} the hostile peer): its session was disturbed; \
             agent stderr:\n{}",
            self.agent.proc.stderr_text()
        );
        assert_relay_did_not_panic(relay);
    }
}

fn assert_relay_did_not_panic(relay: &RelayProc) {
    let stderr = relay.proc.stderr_text();
    assert!(
        !stderr.contains("panicked"),
        "the relay panicked:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------
// Dialling the relay by hand.

fn tunnel_tls(relay: &RelayProc) -> rustls::ClientConfig {
    tunnel::tls::client_config(Some(&relay.ca()), &[ALPN]).expect("tunnel TLS config")
}

/// A QUIC connection to the relay. Keep the endpoint alive as long as the connection.
pub(crate) async fn quic_connect(relay: &RelayProc) -> (quinn::Endpoint, quinn::Connection) {
    let settings = QuicSettings {
        max_incoming_streams: 8,
        keep_alive: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(30),
        initial_rtt: Duration::from_millis(100),
    };
    let (endpoint, _) = tunnel::quic::client_endpoint(relay.addr, tunnel_tls(relay), &settings)
        .expect("QUIC client endpoint");
    let connecting = endpoint
        .connect(relay.addr, SERVER_NAME)
        .expect("QUIC connect parameters");
    let conn = timeout(Duration::from_secs(10), connecting)
        .await
        .expect("QUIC handshake within 10 s")
        .expect("QUIC handshake with the relay");
    (endpoint, conn)
}

/// TLS over TCP to the relay, offering only the tunnel ALPN.
async fn tls_connect(relay: &RelayProc) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tunnel_tls(relay)));
    let tcp = TcpStream::connect(relay.addr).await.expect("TCP connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = rustls_pki_types::ServerName::try_from(SERVER_NAME).expect("server name");
    let tls = timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("TLS handshake within 10 s")
        .expect("TLS handshake with the relay");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(ALPN),
        "the relay did not select the tunnel ALPN"
    );
    tls
}

/// A TLS+yamux tunnel connection to the relay, as the agent's TCP transport makes it.
async fn mux_connect(relay: &RelayProc) -> TunnelConnection {
    let tls = tls_connect(relay).await;
    let conn = MuxConnection::start(tls.compat(), Side::Client);
    TunnelConnection::Mux {
        conn,
        remote: relay.addr,
    }
}

fn instance_id() -> [u8; 16] {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    nanos.to_le_bytes()
}

pub(crate) fn hello(version: u16, credential: &str, route: &str) -> Hello {
    Hello {
        version,
        credential: credential.to_owned(),
        agent_version: "hostile-test".into(),
        instance_id: instance_id(),
        routes: vec![RouteOffer {
            name: route.to_owned(),
            kind: UpstreamKind::Http,
            policy: None,
            accept_tool_changes: false,
        }],
    }
}

/// Opens the handshake stream, says `hello`, and reads the relay's answer.
pub(crate) async fn say_hello(
    conn: &TunnelConnection,
    hello: &Hello,
) -> (HelloReply, SendHalf, RecvHalf) {
    let (mut send, mut recv) = conn.open_bi().await.expect("open the handshake stream");
    protocol::write_frame("hello", &mut send, hello, FrameLimit::CONTROL)
        .await
        .expect("write hello");
    let reply = timeout(
        PROMPT,
        protocol::read_frame::<HelloReply, _>("hello reply", &mut recv, FrameLimit::CONTROL),
    )
    .await
    .unwrap_or_else(|_| panic!("no hello reply over {} within {PROMPT:?}", conn.transport()))
    .unwrap_or_else(|e| panic!("no hello reply over {}: {e}", conn.transport()));
    (reply, send, recv)
}

/// Reads until end of stream or an error, for at most [`PROMPT`]. Returns how
/// many bytes came before the end, or `None` if the stream stayed open.
async fn bytes_until_hang_up<R: AsyncRead + Unpin>(r: &mut R) -> Option<usize> {
    let mut buf = [0u8; 4096];
    let mut received = 0usize;
    timeout(PROMPT, async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
        }
    })
    .await
    .ok()
    .map(|()| received)
}

/// The relay must end the stream promptly without a word: the next read is an
/// end of stream or an error, never a frame.
async fn assert_stream_ends<R: AsyncRead + Unpin>(recv: &mut R, what: &str) {
    match bytes_until_hang_up(recv).await {
        Some(0) => {}
        Some(n) => panic!("{what}: the relay answered with {n} bytes instead of ending the stream"),
        None => panic!("{what}: the relay kept the stream open for {PROMPT:?}"),
    }
}

/// The relay must hang up promptly; what it says before (a TLS alert, a yamux
/// GoAway) does not matter.
async fn assert_hangs_up<R: AsyncRead + Unpin>(r: &mut R, what: &str) {
    assert!(
        bytes_until_hang_up(r).await.is_some(),
        "{what}: the relay kept the connection open for {PROMPT:?}"
    );
}

/// Waits (at most [`PROMPT`]) for the relay to close the tunnel connection.
async fn assert_closed_by_relay(conn: &TunnelConnection, what: &str) {
    assert!(
        timeout(PROMPT, conn.closed()).await.is_ok(),
        "{what}: the relay kept the {} connection open for {PROMPT:?}",
        conn.transport()
    );
}

/// A deterministic pseudo-random byte source (xorshift64*), so that a
/// failure replays byte for byte.
struct Garbage(u64);

impl Garbage {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }
}

/// Peak virtual memory of a process, in KiB (Linux).
fn vm_peak_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmPeak:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------
// 1. Protocol versions.

/// Says `Hello { version }` with an otherwise valid agent token and checks the
/// precise refusal, then that the relay ends the stream and the connection.
async fn assert_version_refused(
    conn: TunnelConnection,
    token: &str,
    version: u16,
    advice: &str,
    wrong_advice: &str,
) {
    let transport = conn.transport();
    let (reply, _send, mut recv) = say_hello(&conn, &hello(version, token, "eve")).await;
    let HelloReply::Refused(refusal) = reply else {
        panic!("protocol version {version} over {transport} was not refused: {reply:?}");
    };
    assert_eq!(
        refusal.code,
        RefusalCode::VersionMismatch,
        "version {version} over {transport}: {refusal:?}"
    );
    assert!(
        refusal.message.contains(advice),
        "version {version} over {transport}: the refusal should say {advice:?}: {:?}",
        refusal.message
    );
    assert!(
        !refusal.message.contains(wrong_advice),
        "version {version} over {transport}: the refusal must not say {wrong_advice:?}: {:?}",
        refusal.message
    );
    assert!(
        refusal.message.contains(&version.to_string()),
        "version {version} over {transport}: the refusal should name the agent's version: {:?}",
        refusal.message
    );
    // The refusal is the relay's last word on this connection.
    let what = format!("after refusing version {version} over {transport}");
    assert_stream_ends(&mut recv, &what).await;
    assert_closed_by_relay(&conn, &what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_mismatch_is_refused_with_an_upgrade_message() {
    let relay = RelayProc::start(&[]).await;
    let healthy = Healthy::start(&relay, "quic").await;
    let token = relay.token("eve@example.com", false);

    let (_e1, newer_quic) = quic_connect(&relay).await;
    let (_e2, older_quic) = quic_connect(&relay).await;
    let newer_tcp = mux_connect(&relay).await;
    let older_tcp = mux_connect(&relay).await;
    // Concurrently: each refusal ends with the relay waiting up to 2 s for the
    // agent to hang up first.
    tokio::join!(
        assert_version_refused(
            TunnelConnection::Quic(newer_quic),
            &token,
            99,
            "upgrade the relay",
            "upgrade the agent",
        ),
        assert_version_refused(
            TunnelConnection::Quic(older_quic),
            &token,
            0,
            "upgrade the agent",
            "upgrade the relay",
        ),
        assert_version_refused(
            newer_tcp,
            &token,
            99,
            "upgrade the relay",
            "upgrade the agent"
        ),
        assert_version_refused(
            older_tcp,
            &token,
            0,
            "upgrade the agent",
            "upgrade the relay"
        ),
    );

    healthy.assert_serves(&relay, "after").await;
}

// ---------------------------------------------------------------------------
// 2. Garbage on the port itself.

/// Writes `bytes` to a fresh TCP connection and checks that the relay hangs up
/// promptly. Whatever the relay sends before hanging up (a TLS alert) is fine.
async fn assert_tcp_garbage_dropped(addr: SocketAddr, bytes: &[u8], what: &str) {
    let mut tcp = TcpStream::connect(addr).await.expect("TCP connect");
    // The relay may hang up before reading everything: a failed write is fine,
    // and a write that never completes shows up as the read timing out below.
    let _ = timeout(PROMPT, tcp.write_all(bytes)).await;
    assert_hangs_up(&mut tcp, what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_on_the_tcp_port_close_only_that_connection() {
    let relay = RelayProc::start(&[]).await;
    // The healthy agent on QUIC: the UDP garbage below goes to its endpoint.
    let healthy = Healthy::start(&relay, "quic").await;
    let mut rng = Garbage(0x9e37_79b9_7f4a_7c15);

    // Plain noise: not even a TLS record.
    let mut noise = rng.bytes(64 * 1024);
    noise[0] = 0xff;
    // Noise behind a TLS handshake record header, so it reaches the parser of
    // the ClientHello instead of failing at the record layer.
    let mut fake_hello = vec![0x16, 0x03, 0x01, 0x40, 0x00];
    fake_hello.extend(rng.bytes(64 * 1024));
    tokio::join!(
        assert_tcp_garbage_dropped(relay.addr, &noise, "64 KiB of noise"),
        assert_tcp_garbage_dropped(relay.addr, &fake_hello, "noise in a TLS handshake record"),
    );

    // UDP: noise, and noise shaped like QUIC long-header (Initial, v1 and an
    // unknown version) and short-header packets.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    for (i, size) in [1, 64, 1200, 1350, 1500, 9000].into_iter().enumerate() {
        let mut datagram = rng.bytes(size);
        match (i % 3, size >= 6) {
            (1, true) => {
                datagram[0] = 0xc0 | (datagram[0] & 0x0f);
                datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
                datagram[5] = 8;
            }
            (2, true) => {
                datagram[0] = 0xc0 | (datagram[0] & 0x0f);
                datagram[1..5].copy_from_slice(&0x1a2a_3a4au32.to_be_bytes());
            }
            _ => datagram[0] = 0x40 | (datagram[0] & 0x3f),
        }
        udp.send_to(&datagram, relay.addr)
            .expect("send UDP garbage");
    }
    // The QUIC endpoint still accepts new connections.
    let (_endpoint, conn) = quic_connect(&relay).await;
    conn.close(0u32.into(), b"done");

    healthy.assert_serves(&relay, "after").await;
}

// ---------------------------------------------------------------------------
// 3. Garbage inside a TLS connection that asked for the tunnel.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frame_after_tls_with_tunnel_alpn_is_dropped() {
    let relay = RelayProc::start(&[]).await;
    // The healthy agent on TCP: it shares the listener and the yamux code.
    let healthy = Healthy::start(&relay, "tcp").await;

    // A yamux stream whose first frame is no Hello: 5 bytes of 0xff.
    let conn = mux_connect(&relay).await;
    let (mut send, mut recv) = conn.open_bi().await.expect("open a stream");
    send.write_all(&[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .expect("write garbage frame");
    send.flush().await.expect("flush");
    assert_stream_ends(&mut recv, "garbage hello over yamux").await;
    assert_closed_by_relay(&conn, "garbage hello over yamux").await;
    assert!(
        relay
            .proc
            .wait_stderr("bad hello", Duration::from_secs(2))
            .await,
        "the relay did not log why it dropped the garbage hello"
    );

    // Not even yamux: noise straight on the TLS stream.
    let mut tls = tls_connect(&relay).await;
    let mut noise = Garbage(0x0123_4567_89ab_cdef).bytes(16 * 1024);
    noise[0] = 0xff; // yamux version 0 is the only one
    let _ = timeout(PROMPT, tls.write_all(&noise)).await;
    let _ = tls.flush().await;
    assert_hangs_up(&mut tls, "noise instead of yamux").await;

    healthy.assert_serves(&relay, "after").await;
}

// ---------------------------------------------------------------------------
// 4. A length prefix that asks for 2 GiB.

async fn assert_oversized_hello_dropped(conn: TunnelConnection) {
    let what = format!("2 GiB length prefix over {}", conn.transport());
    let (mut send, mut recv) = conn.open_bi().await.expect("open a stream");
    send.write_all(&[0x7f, 0xff, 0xff, 0xff, b't', b'i', b'n', b'y'])
        .await
        .expect("write the length prefix");
    send.flush().await.expect("flush");
    // The send half stays open: a relay that waited for the 2 GiB would wait
    // until its handshake timeout.
    assert_stream_ends(&mut recv, &what).await;
    assert_closed_by_relay(&conn, &what).await;
    drop(send);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_refused_before_allocation() {
    let relay = RelayProc::start(&[]).await;
    let healthy = Healthy::start(&relay, "quic").await;
    let peak_before = vm_peak_kib(relay.proc.pid);

    let (_endpoint, quic) = quic_connect(&relay).await;
    let mux = mux_connect(&relay).await;
    tokio::join!(
        assert_oversized_hello_dropped(TunnelConnection::Quic(quic)),
        assert_oversized_hello_dropped(mux),
    );
    assert!(
        relay
            .proc
            .wait_stderr("exceeds the limit", Duration::from_secs(2))
            .await,
        "the relay did not log that the frame was too large"
    );
    // A relay that allocated the announced 2 GiB (even zeroed, untouched
    // pages) would show it in its peak virtual size.
    if let (Some(before), Some(after)) = (peak_before, vm_peak_kib(relay.proc.pid)) {
        assert!(
            after.saturating_sub(before) < 1024 * 1024,
            "the relay's peak virtual memory grew from {before} KiB to {after} KiB: \
             it allocated for the announced frame"
        );
    }

    healthy.assert_serves(&relay, "after").await;
}

// ---------------------------------------------------------------------------
// 5. A valid agent that then breaks the control protocol.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_control_frame_after_handshake_disconnects_that_agent_only() {
    let relay = RelayProc::start(&[]).await;
    let healthy = Healthy::start(&relay, "quic").await;

    let mallory_token = relay.token("mallory@example.com", false);
    let (_endpoint, quic) = quic_connect(&relay).await;
    let conn = TunnelConnection::Quic(quic.clone());
    let (reply, mut send, _recv) =
        say_hello(&conn, &hello(PROTOCOL_VERSION, &mallory_token, "mallory")).await;
    let HelloReply::Welcome(welcome) = reply else {
        panic!("mallory's valid hello was refused: {reply:?}");
    };
    assert_eq!(welcome.owner, "mallory@example.com");
    assert_eq!(welcome.version, PROTOCOL_VERSION);
    assert!(
        welcome.routes.iter().any(|r| r.name == "mallory"),
        "{welcome:?}"
    );

    // A well-formed length prefix around a payload that is no Control message.
    send.write_all(&[0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .expect("write garbage control frame");
    send.flush().await.expect("flush");

    // The relay closes the connection for that reason, not (3 s later) for
    // the agent's silence.
    let closed = timeout(PROMPT, quic.closed())
        .await
        .unwrap_or_else(|_| panic!("the relay kept mallory's tunnel open for {PROMPT:?}"));
    match &closed {
        quinn::ConnectionError::ApplicationClosed(close) => assert!(
            String::from_utf8_lossy(&close.reason).contains("protocol violation"),
            "mallory's tunnel was closed, but not for the bad frame: {close:?}"
        ),
        other => panic!("mallory's tunnel ended without the relay closing it: {other:?}"),
    }

    // Mallory's route has no agent any more.
    let client = HttpsClient::new(&relay.ca(), false);
    let answer = client
        .call(
            "POST",
            &format!("{}/echo", relay.route_url("mallory")),
            Some(&relay.token("mallory@example.com", true)),
            "anyone?",
        )
        .await;
    assert_eq!(answer.status, 503, "{}", answer.text());

    healthy.assert_serves(&relay, "after").await;
}

/// An agent opens no stream but its control stream: a second one (yamux lets
/// it, QUIC's stream limit does not) is reset, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_stream_after_the_handshake_is_reset_and_the_session_lives() {
    let relay = RelayProc::start(&[]).await;
    let healthy = Healthy::start(&relay, "quic").await;

    let token = relay.token("mallory@example.com", false);
    let conn = mux_connect(&relay).await;
    let (reply, mut send, mut recv) =
        say_hello(&conn, &hello(PROTOCOL_VERSION, &token, "mallory")).await;
    assert!(matches!(reply, HelloReply::Welcome(_)), "{reply:?}");

    let (mut extra_send, mut extra_recv) = conn.open_bi().await.expect("open a second stream");
    extra_send
        .write_all(b"not for you")
        .await
        .expect("write on the second stream");
    extra_send.flush().await.expect("flush");
    assert_stream_ends(&mut extra_recv, "a second stream from an agent").await;
    assert!(
        relay
            .proc
            .wait_stderr("unexpected stream", Duration::from_secs(2))
            .await,
        "the relay did not log the unexpected stream"
    );

    // The control stream still answers.
    protocol::write_frame(
        "control",
        &mut send,
        &protocol::Control::Ping { nonce: 7 },
        FrameLimit::CONTROL,
    )
    .await
    .expect("ping");
    let pong = timeout(
        PROMPT,
        protocol::read_frame::<protocol::Control, _>("control", &mut recv, FrameLimit::CONTROL),
    )
    .await
    .expect("no pong in time")
    .expect("read pong");
    assert!(
        matches!(pong, protocol::Control::Pong { nonce: 7 }),
        "{pong:?}"
    );

    healthy.assert_serves(&relay, "after").await;
}

// ---------------------------------------------------------------------------
// 6. A route policy that does not hold.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_policy_that_does_not_validate_is_refused_with_its_line() {
    let relay = RelayProc::start(&[]).await;
    let token = relay.token("mallory@example.com", false);
    let (_endpoint, quic) = quic_connect(&relay).await;
    let conn = TunnelConnection::Quic(quic);
    let mut bad = hello(PROTOCOL_VERSION, &token, "mallory");
    bad.routes[0].policy =
        Some("permit (principal, action, resource)\n  when { context.nope };\n".into());
    let (reply, _send, _recv) = say_hello(&conn, &bad).await;
    match reply {
        HelloReply::Refused(r) => {
            assert_eq!(r.code, RefusalCode::InvalidPolicy, "{r:?}");
            assert!(
                r.message.contains("route 'mallory'")
                    && r.message.contains(":2:")
                    && r.message.contains("nope"),
                "{}",
                r.message
            );
        }
        other => panic!("a broken policy was accepted: {other:?}"),
    }
    // Nothing was claimed or served: the route is unknown.
    let answer = HttpsClient::new(&relay.ca(), false)
        .call(
            "POST",
            &relay.route_url("mallory"),
            Some(&relay.token("mallory@example.com", true)),
            "{}",
        )
        .await;
    assert_eq!(answer.status, 404, "{}", answer.text());
}

// ---------------------------------------------------------------------------
// 7. A valid agent that answers a request out of protocol.

/// Mallory's agent handshakes properly, then answers the relay's exchange
/// with `answer` where a response head belongs. The client gets a 502 naming
/// the violation, mallory's tunnel is closed for it, and the healthy agent
/// notices nothing.
async fn assert_bad_answer_disconnects(answer: &'static [u8], what: &str) {
    let relay = RelayProc::start(&[]).await;
    let healthy = Healthy::start(&relay, "quic").await;

    let mallory_token = relay.token("mallory@example.com", false);
    let (_endpoint, quic) = quic_connect(&relay).await;
    let conn = TunnelConnection::Quic(quic.clone());
    // A plain HTTP route: the relay forwards the request whole, so the test
    // needs no MCP body to reach the exchange.
    let mut offer = hello(PROTOCOL_VERSION, &mallory_token, "mallory");
    offer.routes[0].kind = UpstreamKind::PlainHttp;
    let (reply, _control_send, _control_recv) = say_hello(&conn, &offer).await;
    assert!(
        matches!(reply, HelloReply::Welcome(_)),
        "mallory's valid hello was refused: {reply:?}"
    );
    let rogue = tokio::spawn(async move {
        let (mut send, mut recv) = conn.accept_bi().await.expect("the relay opens an exchange");
        let open =
            protocol::read_frame::<protocol::StreamOpen, _>("open", &mut recv, FrameLimit::HEAD)
                .await
                .expect("the relay's exchange head decodes");
        send.write_all(answer).await.expect("write the bad answer");
        send.flush().await.expect("flush");
        // Keep the stream open: the relay must act on what it read, not on
        // the stream ending.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop((send, recv, open));
    });

    let client = HttpsClient::new(&relay.ca(), false);
    let url = format!("{}/echo", relay.route_url("mallory"));
    let mallory_client = relay.token("mallory@example.com", true);
    let answered = timeout(
        PROMPT,
        client.call("POST", &url, Some(&mallory_client), "hello?"),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: the client got no answer within {PROMPT:?}"));
    assert_eq!(answered.status, 502, "{what}: {}", answered.text());
    let body = answered.json();
    assert_eq!(body["error"], "agent_error", "{what}: {body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("broke the tunnel protocol")),
        "{what}: {body}"
    );

    let closed = timeout(PROMPT, quic.closed())
        .await
        .unwrap_or_else(|_| panic!("{what}: the relay kept mallory's tunnel open"));
    match &closed {
        quinn::ConnectionError::ApplicationClosed(close) => assert!(
            String::from_utf8_lossy(&close.reason).contains("protocol violation"),
            "{what}: closed, but not for the violation: {close:?}"
        ),
        other => panic!("{what}: mallory's tunnel ended without the relay closing it: {other:?}"),
    }
    rogue.abort();

    // Mallory's route is gone with its tunnel: the next request is a clean 503.
    let again = client
        .call("POST", &url, Some(&mallory_client), "anyone?")
        .await;
    assert_eq!(again.status, 503, "{what}: {}", again.text());

    healthy.assert_serves(&relay, "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_head_that_does_not_decode_disconnects_that_agent_only() {
    assert_bad_answer_disconnects(
        &[0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        "garbage response head",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_response_head_disconnects_that_agent_only() {
    assert_bad_answer_disconnects(&[0x7f, 0xff, 0xff, 0xff], "2 GiB response head").await;
}

// ---------------------------------------------------------------------------
// 7. Older agents: the relay writes each exchange head in the version of the
//    agent's hello.

/// An exchange head as protocol versions 2 and 3 decode it.
#[derive(Debug, serde::Deserialize)]
pub(crate) enum OldStreamOpen<H> {
    Exchange(H),
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct OldIdentity {
    pub(crate) subject: String,
    _kind: protocol::IdentityKind,
    _credential_name: String,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct HeadV2 {
    pub(crate) route: String,
    _method: String,
    _path: String,
    _headers: Vec<protocol::Header>,
    pub(crate) identity: OldIdentity,
    _request_id: String,
    _session: Option<String>,
    _body: protocol::BodyKind,
}

#[derive(Debug, serde::Deserialize)]
struct HeadV3 {
    route: String,
    _method: String,
    _path: String,
    _headers: Vec<protocol::Header>,
    identity: OldIdentity,
    _request_id: String,
    _session: Option<String>,
    _body: protocol::BodyKind,
    grants: Vec<GrantV4>,
}

/// A grant as protocol versions 3 and 4 decode it: no resources, no
/// prompts.
#[derive(Debug, serde::Deserialize)]
struct GrantV4 {
    id: String,
    with: String,
    tools: Option<Vec<String>>,
    read_only: bool,
    expires_at: Option<i64>,
}

#[derive(Debug, serde::Deserialize)]
struct HeadV4 {
    route: String,
    _method: String,
    _path: String,
    _headers: Vec<protocol::Header>,
    identity: protocol::Identity,
    _request_id: String,
    _session: Option<String>,
    _body: protocol::BodyKind,
    grants: Vec<GrantV4>,
}

/// Says hello as an agent of `version` and returns the payload of the first
/// exchange head the relay sends it for a client's request.
async fn first_head_for(relay: &RelayProc, version: u16, route: &str) -> Vec<u8> {
    let owner = format!("{route}@example.com");
    let token = relay.token(&owner, false);
    let (_endpoint, quic) = quic_connect(relay).await;
    let conn = TunnelConnection::Quic(quic);
    let (reply, mut send, recv) = say_hello(&conn, &hello(version, &token, route)).await;
    let HelloReply::Welcome(welcome) = reply else {
        panic!("a version {version} hello was refused: {reply:?}");
    };
    assert_eq!(welcome.version, version);
    // Alive: ping the relay every second, as an agent does.
    let _recv = recv;
    let pings = tokio::spawn(async move {
        for nonce in 0.. {
            let ping = protocol::Control::Ping { nonce };
            if protocol::write_frame("control", &mut send, &ping, FrameLimit::CONTROL)
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let req = http::Request::builder()
        .method("POST")
        .uri(relay.route_url(route))
        .header(
            "authorization",
            format!("Bearer {}", relay.token(&owner, true)),
        )
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(e2e::client::full_body(
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.to_owned(),
        ))
        .expect("request");
    let ca = relay.ca();
    let request = tokio::spawn(async move { HttpsClient::new(&ca, false).fetch(req).await });
    let (_s, mut r) = match timeout(Duration::from_secs(10), conn.accept_bi()).await {
        Ok(Ok(stream)) => stream,
        other => {
            let other = other.map(|r| r.map(|_| ()));
            let answer = request.await.expect("the request task");
            panic!(
                "no exchange for a version {version} agent ({other:?}); the client got {}: {}",
                answer.status,
                answer.text()
            );
        }
    };
    let payload = protocol::frame::read_payload("exchange", &mut r, FrameLimit::HEAD)
        .await
        .expect("the exchange head");
    request.abort();
    pings.abort();
    payload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_2_3_and_4_agents_get_heads_they_decode() {
    let relay = RelayProc::start(&[]).await;

    // Version 4: grants without their resources and prompts.
    let owner4 = "older4@example.com";
    let config = crate::sharing::logged_in(&relay, owner4, &relay.token(owner4, false));
    let (code, out, err) = crate::sharing::share(
        &config,
        &[
            "older4",
            "--with",
            "bob@example.com",
            "--tools",
            "read_query",
            "--read-only",
            "--resources",
            "memo://*",
            "--prompts",
            "mcp-demo",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let grant = crate::sharing::grant_id(&out);
    let v4 = first_head_for(&relay, 4, "older4").await;
    let OldStreamOpen::<HeadV4>::Exchange(head) =
        protocol::frame::decode_payload("exchange", &v4).expect("a version 4 head, whole");
    assert_eq!(head.route, "older4");
    assert_eq!(head.identity.subject, owner4);
    assert_eq!(head.grants.len(), 1, "{head:?}");
    let g = &head.grants[0];
    assert_eq!(
        (g.id.as_str(), g.with.as_str(), g.read_only, g.expires_at),
        (grant.as_str(), "bob@example.com", true, None)
    );
    assert_eq!(g.tools.as_deref(), Some(&["read_query".to_owned()][..]));

    let v3 = first_head_for(&relay, 3, "older").await;
    let OldStreamOpen::<HeadV3>::Exchange(head) =
        protocol::frame::decode_payload("exchange", &v3).expect("a version 3 head, whole");
    assert_eq!(head.route, "older");
    assert_eq!(head.identity.subject, "older@example.com");
    assert!(head.grants.is_empty());

    let v2 = first_head_for(&relay, 2, "oldest").await;
    let OldStreamOpen::<HeadV2>::Exchange(head) =
        protocol::frame::decode_payload("exchange", &v2).expect("a version 2 head, whole");
    assert_eq!(head.route, "oldest");
    assert_eq!(head.identity.subject, "oldest@example.com");
}
