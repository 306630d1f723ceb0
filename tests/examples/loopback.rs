//! Loopback benchmark: a client calling the test upstream directly, and through
//! relay and agent over QUIC and over TLS+TCP. Run it with the command in
//! [`COMMAND`]; the table goes to stdout, the children's logs to stderr.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use e2e::client::Body;
use e2e::{AgentProc, RelayProc, Upstream};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

const COMMAND: &str = "cargo build --release --workspace --bins \
    && cargo run --release -p drawbridge-tests --example loopback";
/// The body posted to `/echo`.
const PAYLOAD: &[u8] = &[b'x'; 100];
const WARMUP: usize = 200;
const LATENCY_BUDGET: Duration = Duration::from_secs(30);
const SAMPLES: usize = 2000;
const CONCURRENCY: [usize; 2] = [16, 64];
const LOAD_TIME: Duration = Duration::from_secs(3);
/// Upper bound on requests per load worker, whatever the clock says.
const MAX_PER_WORKER: u64 = 10_000_000;
const BULK_BYTES: u64 = 256 * 1024 * 1024;
const BULK_RUNS: usize = 3;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const BULK_TIMEOUT: Duration = Duration::from_secs(300);

/// How requests reach the upstream.
enum Target {
    /// Plain HTTP/1.1 with a keep-alive pool.
    Direct(Client<HttpConnector, Body>),
    /// HTTPS (HTTP/2, one connection) to the relay's route URL.
    Relay {
        client: Client<HttpsConnector<HttpConnector>, Body>,
        token: String,
    },
}

struct Bench {
    target: Target,
    /// Base URL: the upstream's, or the route's on the relay.
    base: String,
}

impl Bench {
    async fn send(&self, method: &str, path: &str, body: Bytes) -> Response<Incoming> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Target::Relay { token, .. } = &self.target {
            b = b.header("authorization", format!("Bearer {token}"));
        }
        let body = Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync();
        let req = b.body(body).expect("build request");
        match &self.target {
            Target::Direct(c) => c.request(req).await.expect("request to the upstream"),
            Target::Relay { client, .. } => {
                client.request(req).await.expect("request to the relay")
            }
        }
    }

    /// One POST to `/echo`, body read to the end; true if it answered 200.
    async fn echo(&self) -> bool {
        let call = async {
            let resp = self
                .send("POST", "/echo", Bytes::from_static(PAYLOAD))
                .await;
            let ok = resp.status() == StatusCode::OK;
            resp.into_body()
                .collect()
                .await
                .expect("echo response body");
            ok
        };
        tokio::time::timeout(REQUEST_TIMEOUT, call)
            .await
            .expect("echo request timed out")
    }

    /// p50 and p99 of sequential `/echo` calls in microseconds, and the sample count
    /// (below `SAMPLES` only if `LATENCY_BUDGET` ran out first).
    async fn latency(&self) -> (u64, u64, usize) {
        for _ in 0..WARMUP {
            assert!(self.echo().await, "warm-up request failed");
        }
        let deadline = Instant::now() + LATENCY_BUDGET;
        let mut us = Vec::with_capacity(SAMPLES);
        while us.len() < SAMPLES && Instant::now() < deadline {
            let t = Instant::now();
            assert!(self.echo().await, "latency request failed");
            us.push(t.elapsed().as_micros() as u64);
        }
        us.sort_unstable();
        (percentile(&us, 0.50), percentile(&us, 0.99), us.len())
    }

    /// Requests/s with `workers` loops calling `/echo` back to back; and the error count.
    async fn load(self: &Arc<Self>, workers: usize) -> (f64, u64) {
        let start = Instant::now();
        let deadline = start + LOAD_TIME;
        let tasks: Vec<_> = (0..workers)
            .map(|_| {
                let b = self.clone();
                tokio::spawn(async move {
                    let (mut ok, mut err) = (0u64, 0u64);
                    while Instant::now() < deadline && ok + err < MAX_PER_WORKER {
                        let good = b.echo().await;
                        ok += u64::from(good);
                        err += u64::from(!good);
                    }
                    (ok, err)
                })
            })
            .collect();
        let (mut ok, mut err) = (0u64, 0u64);
        for t in tasks {
            let (o, e) = t.await.expect("load worker");
            ok += o;
            err += e;
        }
        (ok as f64 / start.elapsed().as_secs_f64(), err)
    }

    /// One streamed download of `/bytes/BULK_BYTES`, in MB/s (10^6 bytes).
    async fn bulk(&self) -> f64 {
        let t = Instant::now();
        let download = async {
            let resp = self
                .send("GET", &format!("/bytes/{BULK_BYTES}"), Bytes::new())
                .await;
            assert_eq!(resp.status(), StatusCode::OK, "bulk download status");
            let mut body = resp.into_body();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                if let Some(data) = frame.expect("bulk response body").data_ref() {
                    n += data.len() as u64;
                }
            }
            n
        };
        let n = tokio::time::timeout(BULK_TIMEOUT, download)
            .await
            .expect("bulk download timed out");
        assert_eq!(n, BULK_BYTES, "bulk download was cut short");
        n as f64 / t.elapsed().as_secs_f64() / 1e6
    }
}

/// TCP with TCP_NODELAY, as curl and reqwest set it. The harness's `HttpsClient`
/// leaves Nagle's algorithm on, which here adds ~44 ms (a delayed ACK) to every
/// sequential small request through the relay.
fn tcp() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http
}

/// HTTP/2 over TLS, trusting `ca`.
fn https_client(ca: &std::path::Path) -> Client<HttpsConnector<HttpConnector>, Body> {
    let tls = tunnel::tls::client_config(Some(ca), &[]).expect("TLS client config");
    let mut http = tcp();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(https)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Measures one target; returns its table row.
async fn run(name: &str, bench: Arc<Bench>) -> String {
    eprintln!("== {name}: latency");
    let (p50, p99, n) = bench.latency().await;
    let (mut rps, mut errors) = (String::new(), 0);
    for c in CONCURRENCY {
        eprintln!("== {name}: load at concurrency {c}");
        let (r, e) = bench.load(c).await;
        rps += &format!(" {r:>11.0}");
        errors += e;
    }
    let mut mbps = Vec::new();
    for i in 0..BULK_RUNS {
        eprintln!("== {name}: bulk download {}/{BULK_RUNS}", i + 1);
        mbps.push(bench.bulk().await);
    }
    mbps.sort_by(f64::total_cmp);
    let bulk = mbps[BULK_RUNS / 2];
    format!("{name:<16} {p50:>8} {p99:>8} {n:>5}{rps} {bulk:>10.0} {errors:>7}")
}

#[tokio::main]
async fn main() {
    let started = Instant::now();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let profile = if cfg!(debug_assertions) {
        "DEBUG (numbers are meaningless; use --release)"
    } else {
        "release"
    };
    let body = PAYLOAD.len();
    println!("# Drawbridge loopback benchmark");
    println!("# command: {COMMAND}");
    println!("# build: {profile}; {cpus} CPUs; client, upstream, relay, agent on one host");
    println!("# latency: {SAMPLES} sequential POST /echo ({body} B body) after {WARMUP} warm-up");
    let (budget, secs) = (LATENCY_BUDGET.as_secs(), LOAD_TIME.as_secs());
    println!("#   n: samples taken, fewer only if the {budget}s latency budget ran out");
    println!("# req/s: POST /echo, {secs}s per concurrency level");
    println!("# bulk: GET /bytes/{BULK_BYTES} (256 MiB), median of {BULK_RUNS}, 1 MB = 10^6 B");
    println!("# direct: plain HTTP/1.1 keep-alive pool (a connection per worker); TCP_NODELAY");
    println!("# drawbridge-*: HTTPS to the relay, HTTP/2 over one connection; TCP_NODELAY");
    println!("# agent log level as in the harness (agent=debug: a line per request)");

    let upstream = Upstream::start("bench").await;
    let mut rows = Vec::new();
    let direct = Bench {
        target: Target::Direct(Client::builder(TokioExecutor::new()).build(tcp())),
        base: upstream.url(),
    };
    rows.push(run("direct", Arc::new(direct)).await);

    for transport in ["quic", "tcp"] {
        let mut relay = RelayProc::start(&[]).await;
        let agent_token = relay.token("bench@example.com", false);
        let token = relay.token("bench@example.com", true);
        let mut agent =
            AgentProc::start(&relay, &agent_token, "demo", &upstream.url(), transport).await;
        assert_eq!(agent.last_transport(), transport, "wrong transport");
        let bench = Bench {
            target: Target::Relay {
                client: https_client(&relay.ca()),
                token,
            },
            base: relay.route_url("demo"),
        };
        rows.push(run(&format!("drawbridge-{transport}"), Arc::new(bench)).await);
        agent.proc.kill().await;
        relay.proc.kill().await;
    }

    let rps: String = CONCURRENCY
        .map(|c| format!(" {:>11}", format!("req/s c={c}")))
        .concat();
    println!(
        "\n{:<16} {:>8} {:>8} {:>5}{rps} {:>10} {:>7}",
        "target", "p50 µs", "p99 µs", "n", "bulk MB/s", "errors"
    );
    for r in &rows {
        println!("{r}");
    }
    println!();
    println!("# total time: {:.1}s", started.elapsed().as_secs_f64());
}
