//! The load generator: HTTP/1.1 keep-alive, one connection per worker (as
//! `wrk` does), TCP_NODELAY, over plain TCP or TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::machine_cpu::{self, CpuUse};
use crate::record::{percentile, Record};

/// The JSON-RPC body of the small request: an MCP `tools/call` of
/// `read_query` in the stateless 2026-07-28 revision (no session, the
/// protocol version and client capabilities in `_meta`).
pub const TOOLS_CALL: &str = concat!(
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_query","#,
    r#""arguments":{"query":"SELECT 1 AS one"},"_meta":{"#,
    r#""io.modelcontextprotocol/protocolVersion":"2026-07-28","#,
    r#""io.modelcontextprotocol/clientCapabilities":{},"#,
    r#""io.modelcontextprotocol/clientInfo":{"name":"drawbridge-bench","version":"1"}}}}"#
);

/// How long one request may take before the run is declared broken.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where requests go.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// TLS (trusting the relay's CA) with this server name, or plain TCP.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The MCP endpoint's path, e.g. `/mcp` or `/mcp/sql`.
    pub mcp_path: String,
    /// Prefix of `/bytes/<n>`, e.g. `` or `/mcp/bulk`.
    pub bytes_prefix: String,
    /// A bearer token to send.
    pub token: Option<String>,
}

/// A TLS connector trusting `ca` (HTTP/1.1 by ALPN).
pub fn tls_connector(ca: &std::path::Path) -> anyhow::Result<TlsConnector> {
    let config = tunnel::tls::client_config(Some(ca), &[b"http/1.1"])?;
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One keep-alive connection.
pub struct Conn {
    send: SendRequest<Full<Bytes>>,
    target: Target,
}

impl Conn {
    pub async fn open(target: &Target) -> anyhow::Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(target.addr)
            .await
            .with_context(|| format!("connect to {}", target.addr))?;
        tcp.set_nodelay(true)?;
        let send = match &target.tls {
            None => handshake(tcp).await?,
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await?;
                handshake(tls).await?
            }
        };
        Ok(Conn {
            send,
            target: target.clone(),
        })
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.target.addr.to_string());
        if let Some(t) = &self.target.token {
            b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if method == "POST" {
            b = b
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::ACCEPT, "application/json, text/event-stream")
                .header("mcp-protocol-version", "2026-07-28")
                .header("mcp-method", "tools/call")
                .header("mcp-name", "read_query");
        }
        Ok(b.body(Full::new(body))?)
    }

    /// One `tools/call` round trip, the answer read to its end and checked.
    pub async fn tools_call(&mut self) -> anyhow::Result<()> {
        self.traced_tools_call().await.map(|_| ())
    }

    /// [`Conn::tools_call`], returning the relay's `x-request-id` of it
    /// (none from a system that is not a relay).
    pub async fn traced_tools_call(&mut self) -> anyhow::Result<Option<String>> {
        let req = self.request(
            "POST",
            &self.target.mcp_path,
            Bytes::from_static(TOOLS_CALL.as_bytes()),
        )?;
        let call = async {
            self.send.ready().await?;
            let resp = self.send.send_request(req).await?;
            let status = resp.status();
            let id = resp
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, id, body))
        };
        let (status, id, body) = tokio::time::timeout(REQUEST_TIMEOUT, call)
            .await
            .context("tools/call timed out")??;
        if status != StatusCode::OK || !contains(&body, br#""one":1"#) {
            bail!(
                "tools/call answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        Ok(id)
    }

    /// Downloads `/bytes/<n>`; returns the bytes received.
    pub async fn download(&mut self, n: u64, timeout: Duration) -> anyhow::Result<u64> {
        let path = format!("{}/bytes/{n}", self.target.bytes_prefix);
        let req = self.request("GET", &path, Bytes::new())?;
        let get = async {
            self.send.ready().await?;
            let resp = self.send.send_request(req).await?;
            if resp.status() != StatusCode::OK {
                bail!("bulk download answered {}", resp.status());
            }
            let mut body = resp.into_body();
            let mut got = 0u64;
            while let Some(frame) = body.frame().await {
                if let Some(d) = frame?.data_ref() {
                    got += d.len() as u64;
                }
            }
            Ok(got)
        };
        tokio::time::timeout(timeout, get)
            .await
            .context("bulk download timed out")?
    }
}

async fn handshake<S>(io: S) -> anyhow::Result<SendRequest<Full<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What one load level measured.
pub struct LevelResult {
    /// Every request's latency, in µs, sorted.
    pub latencies_us: Vec<f64>,
    /// The same, apart for each target of [`load_spread`] (in its order),
    /// each sorted.
    pub per_target_us: Vec<Vec<f64>>,
    pub rps: f64,
    pub errors: u64,
    /// The whole machine's CPU over the measured time, where it can be read.
    pub cpu: Option<CpuUse>,
}

impl LevelResult {
    /// The level as a record of `system` in `scenario` at `concurrency`
    /// (p50, p99, rate, requests), after printing its line.
    pub fn record(&self, system: &str, scenario: &str, concurrency: usize) -> Record {
        let mut r = Record::new(system, scenario);
        r.concurrency = Some(concurrency as u64);
        r.p50_us = Some(percentile(&self.latencies_us, 0.5));
        r.p99_us = Some(percentile(&self.latencies_us, 0.99));
        r.rps = Some(self.rps);
        r.runs = Some(self.latencies_us.len() as u64);
        r.busy = self.cpu.map(|c| c.busy);
        r.cpu_us = self.cpu.and_then(|c| c.us_per_request(self.rps));
        let cpu = match (r.busy, r.cpu_us) {
            (Some(b), Some(us)) => {
                format!("; machine {:.0}% busy, {us:.0} µs CPU a request", b * 100.0)
            }
            _ => String::new(),
        };
        eprintln!(
            "  c={concurrency:<3} p50 {:>7.0} µs  p99 {:>8.0} µs  {:>8.0} req/s  ({} requests, {} errors{cpu})",
            r.p50_us.unwrap_or(0.0),
            r.p99_us.unwrap_or(0.0),
            self.rps,
            self.latencies_us.len(),
            self.errors
        );
        r
    }
}

/// `workers` connections each sending `tools/call` back to back for
/// `duration` (after `warmup` per worker, not measured).
pub async fn load(
    target: &Target,
    workers: usize,
    warmup: usize,
    duration: Duration,
) -> anyhow::Result<LevelResult> {
    load_spread(std::slice::from_ref(target), workers, warmup, duration).await
}

/// [`load`] over several targets (e.g. the nodes of a cluster): each worker
/// holds a connection to every target and sends its requests to them in
/// turn, worker `w`'s `k`-th request to target `(w + k) % targets.len()`,
/// so that even one worker spreads its requests evenly.
pub async fn load_spread(
    targets: &[Target],
    workers: usize,
    warmup: usize,
    duration: Duration,
) -> anyhow::Result<LevelResult> {
    if targets.is_empty() {
        bail!("no target to load");
    }
    let n = targets.len();
    let mut opened = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut conns = Vec::with_capacity(n);
        for target in targets {
            conns.push(Conn::open(target).await?);
        }
        opened.push(conns);
    }
    // The warm-up runs on every connection at once, as the level will.
    let warmup_each = warmup.div_ceil(n);
    let warming: Vec<_> = opened
        .into_iter()
        .map(|mut conns| {
            tokio::spawn(async move {
                for c in &mut conns {
                    for _ in 0..warmup_each {
                        c.tools_call().await.context("warm-up")?;
                    }
                }
                anyhow::Ok(conns)
            })
        })
        .collect();
    let mut all_conns = Vec::with_capacity(workers);
    for w in warming {
        all_conns.push(w.await??);
    }
    let cpu_before = machine_cpu::sample();
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = all_conns
        .into_iter()
        .enumerate()
        .map(|(w, mut conns)| {
            tokio::spawn(async move {
                let mut lat: Vec<Vec<f64>> = (0..n).map(|_| Vec::with_capacity(4096)).collect();
                let mut errors = 0u64;
                let mut last_error = None;
                let mut next = w % n;
                while Instant::now() < deadline {
                    let i = next;
                    next = (next + 1) % n;
                    let c = &mut conns[i];
                    let t = Instant::now();
                    match c.tools_call().await {
                        Ok(()) => lat[i].push(t.elapsed().as_nanos() as f64 / 1000.0),
                        Err(e) => {
                            errors += 1;
                            last_error = Some(e.to_string());
                            if errors > 100 {
                                break;
                            }
                            // The connection may be gone: start a new one.
                            if let Ok(fresh) = Conn::open(&c.target).await {
                                *c = fresh;
                            }
                        }
                    }
                }
                (lat, errors, last_error)
            })
        })
        .collect();
    let mut per_target: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut errors = 0;
    let mut last_error = None;
    for t in tasks {
        let (lat, e, le) = t.await?;
        for (mine, theirs) in per_target.iter_mut().zip(lat) {
            mine.extend(theirs);
        }
        errors += e;
        last_error = le.or(last_error);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_before
        .zip(machine_cpu::sample())
        .and_then(|(a, b)| machine_cpu::between(a, b));
    let mut all: Vec<f64> = per_target.iter().flatten().copied().collect();
    if all.is_empty() {
        bail!(
            "no request succeeded: {}",
            last_error.unwrap_or_else(|| "no time to send any".into())
        );
    }
    if let Some(e) = last_error {
        eprintln!("  {errors} errors, last: {e}");
    }
    all.sort_by(f64::total_cmp);
    for lat in &mut per_target {
        lat.sort_by(f64::total_cmp);
    }
    Ok(LevelResult {
        rps: all.len() as f64 / elapsed,
        latencies_us: all,
        per_target_us: per_target,
        errors,
        cpu,
    })
}

/// One bulk download of `n` bytes on a fresh connection, in MB/s (10^6 B/s).
pub async fn bulk(target: &Target, n: u64) -> anyhow::Result<f64> {
    let mut c = Conn::open(target).await?;
    let t = Instant::now();
    let got = c.download(n, Duration::from_secs(300)).await?;
    if got != n {
        bail!("bulk download cut short: {got} of {n} bytes");
    }
    Ok(n as f64 / t.elapsed().as_secs_f64() / 1e6)
}
