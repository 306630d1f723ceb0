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
pub mod approval;
pub mod auth;
pub mod exchange;
pub mod page;
pub mod prompt;
pub mod ring;
pub mod tap;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use http::StatusCode;
use protocol::ExchangeHead;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tunnel::SendHalf;

use crate::report::Summary;
pub use auth::Secret;
use exchange::{Decided, Detail, Row, Timings};
use ring::Ring;
pub use tap::Tap;

/// The rule an exchange approved by the owner shows (`--approve`).
pub const APPROVED: &str = "approved-by-owner";
/// The rule of an exchange the owner denied.
pub const DENIED: &str = "denied-by-owner";
/// The rule of an exchange nobody approved in time.
pub const APPROVAL_TIMEOUT: &str = "approval-timeout";

/// What [`Inspector::hold`] decided.
#[derive(Debug, Default)]
pub struct Held {
    /// The entry kept while it waited.
    pub id: Option<u64>,
    /// On to the local server.
    pub go: bool,
    pub verdict: Option<approval::Verdict>,
}

/// The JSON-RPC answer to a denied body: an error per request.
fn denial(request_ids: &[Value], reason: &str) -> Value {
    let error = |id: &Value| {
        json!({"jsonrpc": "2.0", "id": id,
            "error": {"code": policy::body::POLICY_DENIED, "message": reason}})
    };
    match request_ids {
        [one] => error(one),
        [] => error(&Value::Null),
        many => Value::Array(many.iter().map(error).collect()),
    }
}

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
    /// Which exchanges wait for the owner (`--approve`).
    pub approve: approval::ApproveMode,
    /// How long they wait (`--approve-timeout`).
    pub approve_timeout: std::time::Duration,
    /// Ask in the terminal when no page is open (stdin and stdout are a
    /// terminal, and the view is the one-line log).
    pub terminal_prompt: bool,
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
    /// `--approve`, unless off.
    approvals: Option<approval::Approvals>,
    terminal_prompt: bool,
    /// Itself, for the terminal prompt's thread.
    this: std::sync::Weak<Inspector>,
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
#[derive(Debug, Clone)]
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
    /// The relay's policies that allowed it, as it told them
    /// ([`protocol::RELAY_RULES_HEADER`]); `None` from a relay that does not.
    relay_rules: Option<Vec<String>>,
}

impl Arrival {
    pub fn new(head: &ExchangeHead, started: Instant, relay_rules: Option<&str>) -> Arrival {
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
            relay_rules: relay_rules.map(|r| {
                r.split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
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
        let inspector = Arc::new_cyclic(|this| Inspector {
            this: this.clone(),
            terminal_prompt: opts.terminal_prompt,
            ring: Mutex::new(Ring::new(opts.history)),
            events,
            secret,
            body_limit: opts.body_limit,
            approvals: (opts.approve != approval::ApproveMode::Off)
                .then(|| approval::Approvals::new(opts.approve, opts.approve_timeout)),
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

    /// Keeps the exchange that `arrival`, `summary` and `tap` describe (in
    /// place of its pending entry if it waited for approval), and tells the
    /// open pages.
    pub fn record(
        &self,
        arrival: &Arrival,
        gate_done: Instant,
        summary: &Summary,
        tap: &Tap,
        held: Held,
    ) {
        let captured = tap.finish();
        let state = if summary.allowed { "allow" } else { "deny" };
        self.keep(
            held.id,
            arrival,
            gate_done,
            summary,
            captured,
            state,
            held.verdict,
        );
    }

    /// Builds the detail and keeps it as entry `id` (or a new one).
    #[allow(clippy::too_many_arguments)]
    fn keep(
        &self,
        id: Option<u64>,
        arrival: &Arrival,
        gate_done: Instant,
        summary: &Summary,
        captured: tap::Captured,
        decision: &'static str,
        approval: Option<approval::Verdict>,
    ) -> u64 {
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
                    caller: arrival.caller.clone(),
                    client: arrival.client.clone(),
                    route: arrival.route.clone(),
                    http_method: arrival.http_method.clone(),
                    method,
                    tool,
                    what: summary.what.clone(),
                    decision,
                    approval,
                    rules: summary.policies.clone(),
                    status: captured.status,
                    latency_ms: ms(Instant::now()),
                    request_bytes: captured.request.as_ref().map_or(0, |r| r.size),
                    response_bytes: captured.response.size,
                },
                request_id: arrival.request_id.clone(),
                session: arrival.session.clone(),
                path: arrival.path.clone(),
                laptop: Decided {
                    allowed: summary.allowed,
                    rules: summary.policies.clone(),
                },
                relay: arrival.relay_rules.clone().map(|rules| Decided {
                    allowed: true,
                    rules,
                }),
                timings: Timings {
                    gate_ms: ms(gate_done),
                    first_byte_ms: captured.first_byte.map(ms),
                    total_ms: ms(Instant::now()),
                },
                request: captured.request,
                response: captured.response,
                messages: captured.messages,
                messages_total: captured.messages_total,
            })
        };
        let (id, row) = {
            let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            let id = match id.and_then(|id| ring.get_mut(id).map(|slot| (id, slot))) {
                Some((id, slot)) => {
                    *slot = detail(id);
                    id
                }
                None => ring.push_with(detail),
            };
            (id, ring.get(id).map(|d| d.row.clone()))
        };
        if let Some(row) = row {
            if let Ok(json) = serde_json::to_string(&row) {
                // Nobody listening is fine.
                let _ = self.events.send(Arc::from(json));
            }
        }
        id
    }

    /// With `--approve`: holds an exchange the gate let through until the
    /// owner approves or denies it (or `--approve-timeout` passes). Denied:
    /// the JSON-RPC error has been sent, and `summary` says why.
    pub async fn hold(
        &self,
        arrival: &Arrival,
        summary: &mut Summary,
        tap: &Tap,
        send: &mut SendHalf,
    ) -> Held {
        let pass = Held {
            id: None,
            go: true,
            verdict: None,
        };
        let Some(approvals) = &self.approvals else {
            return pass;
        };
        let messages = tap.messages();
        let shape = tap.shape();
        if !approvals.mode.needs(&shape) {
            return pass;
        }
        let since = Instant::now();
        if approvals.remembered(&arrival.caller) {
            summary.policies.push(APPROVED.into());
            let verdict = approval::Verdict::now(true, "owner (remembered for this caller)", since);
            tap.set_approval(format!("approved; by={}; at={}", verdict.by, verdict.at));
            return Held {
                verdict: Some(verdict),
                ..pass
            };
        }
        let id = self.keep(
            None,
            arrival,
            since,
            summary,
            tap.snapshot(),
            "pending",
            None,
        );
        let rx = approvals.wait(id, &arrival.caller);
        // Nobody watching the page: ask in the terminal, if there is one.
        if self.terminal_prompt && self.events.receiver_count() == 0 {
            if let Some(this) = self.this.upgrade() {
                let sql: Vec<&str> = messages.iter().filter_map(|m| m.sql.as_deref()).collect();
                let question = format!(
                    "approve #{id}: {} by {} ({})?",
                    summary.what,
                    arrival.caller,
                    sql.join("; ")
                );
                prompt::ask(this, id, question, since + approvals.timeout);
            }
        }
        tracing::info!(
            inspector_id = id,
            request_id = arrival.request_id,
            caller = arrival.caller,
            what = summary.what,
            timeout = ?approvals.timeout,
            "waiting for the owner's approval (--approve)"
        );
        let verdict = match tokio::time::timeout(approvals.timeout, rx).await {
            Ok(Ok(d)) => approval::Verdict::now(d.approve, &d.by, since),
            Ok(Err(_)) | Err(_) => {
                approvals.forget(id);
                approval::Verdict::now(false, "timeout", since)
            }
        };
        tracing::info!(
            inspector_id = id,
            request_id = arrival.request_id,
            caller = arrival.caller,
            what = summary.what,
            approved = verdict.approved,
            by = verdict.by,
            at = verdict.at,
            "the owner's approval"
        );
        let word = if verdict.approved {
            "approved"
        } else if verdict.by == "timeout" {
            "timeout"
        } else {
            "denied"
        };
        tap.set_approval(format!("{word}; by={}; at={}", verdict.by, verdict.at));
        if verdict.approved {
            summary.policies.push(APPROVED.into());
        } else {
            let (rule, reason) = if verdict.by == "timeout" {
                (
                    APPROVAL_TIMEOUT,
                    format!(
                        "the route owner did not approve this {} within {} (agent --approve-timeout); denied",
                        summary.what,
                        humantime::format_duration(approvals.timeout)
                    ),
                )
            } else {
                (
                    DENIED,
                    format!(
                        "the route owner denied this {} on the laptop ({}, {})",
                        summary.what, verdict.by, verdict.at
                    ),
                )
            };
            summary.allowed = false;
            summary.policies = vec![rule.into()];
            let body = denial(&shape.request_ids, &reason);
            tap.status(StatusCode::OK.as_u16());
            tap.response_chunk(body.to_string().as_bytes());
            let word = tap.approval().unwrap_or_default();
            let told = vec![protocol::Header {
                name: protocol::APPROVAL_HEADER.into(),
                value: word.into_bytes(),
            }];
            crate::reply::json_with(send, StatusCode::OK, &body, told).await;
        }
        Held {
            id: Some(id),
            go: verdict.approved,
            verdict: Some(verdict),
        }
    }

    /// Whether exchange `id` waits for the owner.
    pub fn is_pending(&self, id: u64) -> bool {
        self.approvals.as_ref().is_some_and(|a| a.is_waiting(id))
    }

    /// `off`, `writes` or `all`.
    pub fn approve_mode(&self) -> &'static str {
        match self.approvals.as_ref().map(|a| a.mode) {
            None | Some(approval::ApproveMode::Off) => "off",
            Some(approval::ApproveMode::Writes) => "writes",
            Some(approval::ApproveMode::All) => "all",
        }
    }

    /// The owner decides a pending exchange (the page or the API).
    pub fn decide(
        &self,
        id: u64,
        decision: approval::Decision,
    ) -> Result<(), approval::DecideError> {
        match &self.approvals {
            Some(a) => a.decide(id, decision),
            None => Err(approval::DecideError::NotPending(id)),
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
