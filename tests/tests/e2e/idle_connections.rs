//! Idle client connections: an HTTP/2 connection to the relay with no stream
//! in flight for `--http-idle-timeout` is closed (GOAWAY); one with a request
//! in flight is not, however long the request takes.

use std::time::Duration;

use bytes::Bytes;
use e2e::client::{full_body, Body};
use e2e::{AgentProc, RelayProc, Upstream};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A raw HTTP/2 connection to the relay: the handle to send on, and the
/// connection's task (it ends when the relay closes the connection).
async fn h2_connection(relay: &RelayProc) -> (SendRequest<Body>, JoinHandle<()>) {
    let tcp = tokio::net::TcpStream::connect(relay.addr)
        .await
        .expect("connect");
    let tls = tunnel::tls::client_config(Some(&relay.ca()), &[b"h2"]).expect("tls config");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .expect("tls");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, task)
}

fn get(relay: &RelayProc, path: &str, token: &str) -> http::Request<Body> {
    http::Request::builder()
        .uri(format!("{}{path}", relay.route_url("demo")))
        .header("authorization", format!("Bearer {token}"))
        .body(full_body(Bytes::new()))
        .expect("request")
}

/// Waits up to `within` for the connection task to end; how long it took.
async fn closed_within(task: &mut JoinHandle<()>, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    tokio::time::timeout(within, task)
        .await
        .ok()
        .map(|_| start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_and_a_busy_one_is_not() {
    let up = Upstream::start("u").await;
    let relay = RelayProc::start(&["--http-idle-timeout", "1s"]).await;
    let _agent = AgentProc::start(
        &relay,
        &relay.token("alice@x", false),
        "demo",
        &up.url(),
        "auto",
    )
    .await;
    let token = relay.token("alice@x", true);

    // One request, then nothing: closed about a second after it ended.
    let (mut send, mut task) = h2_connection(&relay).await;
    let resp = send
        .send_request(get(&relay, "/echo", &token))
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    drop(resp);
    let took = closed_within(&mut task, Duration::from_secs(30))
        .await
        .expect("the idle connection was not closed");
    assert!(took >= Duration::from_millis(500), "closed after {took:?}");
    assert!(
        send.ready().await.is_err(),
        "the connection still takes requests"
    );

    // A connection that never sends a stream is closed too.
    let (_send, mut task) = h2_connection(&relay).await;
    closed_within(&mut task, Duration::from_secs(30))
        .await
        .expect("the connection without streams was not closed");

    // A request in flight (the local server never answers) keeps its
    // connection open well past the idle timeout ...
    let (mut send, mut task) = h2_connection(&relay).await;
    let hanging = send.send_request(get(&relay, "/hang", &token));
    let hanging = tokio::spawn(hanging);
    assert!(
        closed_within(&mut task, Duration::from_secs(4))
            .await
            .is_none(),
        "a connection with a request in flight was closed"
    );
    // ... and other requests on it are served meanwhile.
    let resp = send
        .send_request(get(&relay, "/echo", &token))
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    drop(resp);
    // Once the client gives up on it, the connection is idle and closed.
    hanging.abort();
    closed_within(&mut task, Duration::from_secs(30))
        .await
        .expect("the connection was not closed once idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_timeout_off_an_idle_connection_stays() {
    let relay = RelayProc::start(&["--http-idle-timeout", "0"]).await;
    let (_send, mut task) = h2_connection(&relay).await;
    assert!(
        closed_within(&mut task, Duration::from_secs(3))
            .await
            .is_none(),
        "closed although --http-idle-timeout is 0"
    );
}
