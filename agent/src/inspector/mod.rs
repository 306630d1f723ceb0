//! The laptop's window (`agent connect --inspect`): a page on loopback that
//! shows every exchange as the agent judges it — who asked, which tool, the
//! SQL and what the policy crate reads in it, which rules decided, what came
//! back and how long it took — and a JSON API (`/api/…`) the page is a client
//! of.
//!
//! * [`ring`]: the last N exchanges, in memory only (bodies never touch disk).
//! * [`tap`]: what one exchange shows while it happens (only when on).
//! * [`exchange`]: a row of the list and the detail of one exchange.
//! * [`auth`]: the per-run secret, its cookie, CSRF and `Host` checks.
//! * [`api`]: the HTTP server and its routes; [`page`]: the page itself.
//!
//! With `--inspect` off, the agent creates no [`Inspector`] and no [`Tap`]:
//! the exchange path does no extra work.

pub mod api;
pub mod auth;
pub mod exchange;
pub mod page;
pub mod ring;
pub mod tap;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use protocol::ExchangeHead;
use tokio::sync::broadcast;

use crate::gate::Summary;
pub use auth::Secret;
use exchange::{Decided, Detail, Row, Timings};
use ring::Ring;
pub use tap::Tap;

/// The default address of `--inspect`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4040";
/// How many ports after a taken one are tried.
const PORT_TRIES: u16 = 20;

/// `--inspect` and its knobs.
#[derive(Debug, Clone)]
pub struct InspectorOptions {
    pub addr: SocketAddr,
    /// Serve on a non-loopback address (`--inspect-allow-remote`).
    pub allow_remote: bool,
    /// How many exchanges are kept (`--inspect-history`).
    pub history: usize,
    /// How many bytes of each body are kept (`--inspect-body-limit`).
    pub body_limit: usize,
}

/// Why the inspector did not start.
#[derive(Debug, thiserror::Error)]
pub enum InspectorError {
    #[error("--inspect {0}: not a loopback address; the inspector shows request bodies and SQL, so it only listens on loopback unless --inspect-allow-remote is given")]
    NotLoopback(SocketAddr),
    #[error("--inspect {addr}: cannot listen there or on the next {PORT_TRIES} ports: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot make the inspector's secret")]
    Secret,
}

/// The live view of one agent's exchanges.
pub struct Inspector {
    ring: Mutex<Ring<Arc<Detail>>>,
    events: broadcast::Sender<Arc<str>>,
    secret: Secret,
    body_limit: usize,
    /// The address it serves.
    pub addr: SocketAddr,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector")
            .field("addr", &self.addr)
            .finish()
    }
}

/// What the agent knows of an exchange before it is served (the head goes
/// to the local server).
#[derive(Debug)]
pub struct Arrival {
    time: SystemTime,
    started: Instant,
    caller: String,
    client: String,
    route: String,
    http_method: String,
    request_id: String,
    session: Option<String>,
    path: String,
}

impl Arrival {
    pub fn new(head: &ExchangeHead, started: Instant) -> Arrival {
        Arrival {
            time: SystemTime::now(),
            started,
            caller: head.identity.subject.clone(),
            client: head.identity.credential_name.clone(),
            route: head.route.clone(),
            http_method: head.method.clone(),
            request_id: head.request_id.clone(),
            session: head.session.clone(),
            path: head.path.clone(),
        }
    }
}

impl Inspector {
    /// Binds the inspector (`opts.addr`, or the next free port) and serves
    /// it until the process ends. Returns it; its URL with the secret is
    /// [`Inspector::url`].
    pub async fn start(opts: &InspectorOptions) -> Result<Arc<Inspector>, InspectorError> {
        if !opts.allow_remote && !is_loopback(opts.addr.ip()) {
            return Err(InspectorError::NotLoopback(opts.addr));
        }
        let listener = bind(opts.addr).await?;
        let addr = listener
            .local_addr()
            .map_err(|source| InspectorError::Bind {
                addr: opts.addr,
                source,
            })?;
        let secret = Secret::generate(addr.port()).map_err(|_| InspectorError::Secret)?;
        let (events, _) = broadcast::channel(256);
        let inspector = Arc::new(Inspector {
            ring: Mutex::new(Ring::new(opts.history)),
            events,
            secret,
            body_limit: opts.body_limit,
            addr,
        });
        let hosts = (!opts.allow_remote).then(|| allowed_hosts(addr));
        tokio::spawn(api::serve(listener, inspector.clone(), hosts));
        Ok(inspector)
    }

    /// `http://ADDR/?token=SECRET`: opening it signs the browser in.
    pub fn url(&self) -> String {
        format!("http://{}/?token={}", self.addr, self.secret.token())
    }

    /// A capture for one exchange.
    pub fn tap(&self) -> Tap {
        Tap::new(self.body_limit)
    }

    /// Keeps the exchange that `arrival`, `summary` and `tap` describe, and
    /// tells the open pages.
    pub fn record(&self, arrival: Arrival, gate_done: Instant, summary: &Summary, tap: &Tap) {
        let captured = tap.finish();
        let first = captured.messages.first();
        let method = first.and_then(|m| m.method.clone());
        let tool = first
            .filter(|m| m.method.as_deref() == Some("tools/call"))
            .and_then(|m| m.target.clone());
        let started = arrival.started;
        let ms = move |t: Instant| t.duration_since(started).as_secs_f64() * 1000.0;
        let detail = move |id: u64| {
            Arc::new(Detail {
                row: Row {
                    id,
                    time: humantime::format_rfc3339_millis(arrival.time).to_string(),
                    caller: arrival.caller,
                    client: arrival.client,
                    route: arrival.route,
                    http_method: arrival.http_method,
                    method,
                    tool,
                    what: summary.what.clone(),
                    decision: if summary.allowed { "allow" } else { "deny" },
                    rules: summary.policies.clone(),
                    status: captured.status,
                    latency_ms: ms(Instant::now()),
                    request_bytes: captured.request.as_ref().map_or(0, |r| r.size),
                    response_bytes: captured.response.size,
                },
                request_id: arrival.request_id,
                session: arrival.session,
                path: arrival.path,
                laptop: Decided {
                    allowed: summary.allowed,
                    rules: summary.policies.clone(),
                },
                relay: None,
                timings: Timings {
                    gate_ms: ms(gate_done),
                    first_byte_ms: captured.first_byte.map(ms),
                    total_ms: ms(Instant::now()),
                },
                request: captured.request,
                response: captured.response,
                messages: captured.messages,
            })
        };
        let row = {
            let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            let id = ring.push_with(detail);
            ring.get(id).map(|d| d.row.clone())
        };
        if let Some(row) = row {
            if let Ok(json) = serde_json::to_string(&row) {
                // Nobody listening is fine.
                let _ = self.events.send(Arc::from(json));
            }
        }
    }

    /// The rows kept, newest first, that pass `filter`.
    pub fn rows(&self, filter: &api::Filter) -> Vec<Row> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.newest_first()
            .filter(|d| filter.passes(&d.row))
            .take(filter.limit)
            .map(|d| d.row.clone())
            .collect()
    }

    /// The detail of exchange `id`, if still kept.
    pub fn detail(&self, id: u64) -> Option<Arc<Detail>> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.get(id).cloned()
    }

    /// How many exchanges are kept now, and at most.
    pub fn kept(&self) -> (usize, usize) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        (ring.len(), ring.capacity())
    }

    /// Forgets every exchange kept.
    pub fn clear(&self) {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.events.subscribe()
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// `addr`, or (port given and taken) one of the next ports.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, InspectorError> {
    let mut last = None;
    let tries = if addr.port() == 0 { 1 } else { PORT_TRIES + 1 };
    for i in 0..tries {
        let Some(port) = addr.port().checked_add(i) else {
            break;
        };
        match tokio::net::TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(source) => return Err(InspectorError::Bind { addr, source }),
        }
    }
    Err(InspectorError::Bind {
        addr,
        source: last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrInUse)),
    })
}

/// The `Host` values a browser sends to the inspector at `addr`.
fn allowed_hosts(addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    let mut hosts = vec![addr.to_string(), format!("localhost:{port}")];
    if addr.ip().is_ipv4() {
        hosts.push(format!("127.0.0.1:{port}"));
    } else {
        hosts.push(format!("[::1]:{port}"));
    }
    hosts
}
