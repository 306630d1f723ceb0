//! One request's audit events, assembled along the request path and written
//! when the response body ends (so they carry the status, the bytes sent and
//! the full latency).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::audit::{now_rfc3339, AuditEvent, SqlSummary};
use crate::http::body::{BoxError, RespBody};
use crate::metrics;
use crate::state::SharedState;
use policy::jsonrpc::Message;
use policy::sql::SqlFacts;
use policy::Decision;

/// The audit record of one request in progress.
pub struct Trail {
    base: AuditEvent,
    started: Instant,
    pub route: String,
    pub identity: String,
    /// The identity provider's groups of `identity`.
    pub groups: Vec<String>,
    pub client: String,
    pub bytes_in: u64,
    /// The route is claimed on this relay: metrics may name it.
    pub route_known: bool,
    /// One entry per JSON-RPC message (empty: the request carried none).
    messages: Vec<AuditEvent>,
    skip: bool,
    /// Where the time went, for the request's log line.
    pub timing: Timing,
}

/// How long the parts of one request took that the relay can tell apart, in
/// microseconds: the log line shows whether a slow answer was the relay's
/// doing or the agent's.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timing {
    /// Reading the JSON-RPC messages, classifying their SQL, deciding them.
    pub policy_us: Option<u64>,
    /// From the exchange sent down the tunnel to the agent's response head
    /// (the tunnel both ways, the agent's own check, the local server).
    pub agent_us: Option<u64>,
}

impl Trail {
    pub fn new(request_id: &str, method: &Method, path: &str, started: Instant) -> Trail {
        Trail {
            base: AuditEvent {
                time: now_rfc3339(),
                request_id: request_id.to_owned(),
                http: format!("{method} {path}"),
                decision: "deny".into(),
                ..Default::default()
            },
            started,
            route: String::new(),
            identity: String::new(),
            groups: Vec::new(),
            client: String::new(),
            bytes_in: 0,
            route_known: false,
            messages: Vec::new(),
            skip: false,
            timing: Timing::default(),
        }
    }

    /// Not a route request (health checks, unknown paths): nothing to audit.
    pub fn skip(&mut self) {
        self.skip = true;
    }

    pub fn allow(&mut self, rule: &str) {
        self.base.decision = "allow".into();
        self.base.policy = vec![rule.to_owned()];
    }

    pub fn deny(&mut self, rule: &str) {
        self.base.decision = "deny".into();
        self.base.policy = vec![rule.to_owned()];
    }

    /// The route owner's word on the request, as the agent reported it (see
    /// [`protocol::APPROVAL_HEADER`]): kept in every event of the request.
    pub fn approval(&mut self, word: &str) {
        self.base.approval = Some(word.chars().take(256).collect());
    }

    /// Records what each JSON-RPC message of the body is, what its SQL does
    /// and what the policy decided about it.
    pub fn messages(
        &mut self,
        state: &SharedState,
        messages: &[Message],
        facts: &[Option<SqlFacts>],
        decisions: &[Decision],
    ) {
        self.messages = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let decision = decisions.get(i);
                AuditEvent {
                    method: m.method.clone(),
                    kind: Some(m.kind.as_str().to_owned()),
                    target: m.target.clone(),
                    arguments: m.arguments.as_ref().map(|a| state.audit.arguments(a)),
                    sql: facts.get(i).and_then(|f| f.as_ref()).map(SqlSummary::from),
                    decision: match decision {
                        Some(d) if d.allowed => "allow".into(),
                        Some(_) => "deny".into(),
                        None => String::new(),
                    },
                    policy: decision.map(|d| d.policies.clone()).unwrap_or_default(),
                    ..Default::default()
                }
            })
            .collect();
    }

    /// Wraps the response so that the events are written when its body ends.
    pub fn attach(self, state: &SharedState, response: Response<RespBody>) -> Response<RespBody> {
        if self.skip {
            return response;
        }
        let status = response.status().as_u16();
        // Metrics name only routes the relay knows: a client cannot grow
        // their series by calling made-up routes.
        let metric_route = if self.route_known || state.registry.serves(&self.route) {
            self.route.clone()
        } else {
            metrics::UNKNOWN_ROUTE.to_owned()
        };
        state
            .metrics
            .request_duration(&metric_route, self.started.elapsed());
        let mut base = self.base;
        base.route = self.route;
        base.identity = self.identity;
        base.groups = self.groups;
        base.client = self.client;
        base.status = status;
        base.bytes_in = self.bytes_in;
        let events = if self.messages.is_empty() {
            vec![base]
        } else {
            self.messages
                .into_iter()
                .map(|m| {
                    // A message the policy judged carries its own decision;
                    // otherwise the request's (a refusal before any policy).
                    let judged = !m.decision.is_empty();
                    AuditEvent {
                        method: m.method,
                        kind: m.kind,
                        target: m.target,
                        arguments: m.arguments,
                        sql: m.sql,
                        decision: if judged {
                            m.decision
                        } else {
                            base.decision.clone()
                        },
                        policy: if judged {
                            m.policy
                        } else {
                            base.policy.clone()
                        },
                        ..base.clone()
                    }
                })
                .collect()
        };
        let (parts, body) = response.into_parts();
        let mut body = AuditedBody {
            inner: body,
            state: state.clone(),
            events,
            metric_route,
            started: self.started,
            bytes_out: 0,
            complete: false,
        };
        if body.inner.is_end_stream() {
            // No body to wait for: the client may see the whole response as
            // soon as its head is sent.
            body.complete = true;
            body.write();
        }
        Response::from_parts(parts, body.boxed_unsync())
    }
}

/// A response body that writes the request's audit events when it ends,
/// before the client gets its last frame (see the durability rule in
/// [`crate::audit`]), or when it is dropped (the client went away).
struct AuditedBody {
    inner: RespBody,
    state: SharedState,
    events: Vec<AuditEvent>,
    /// The route as metrics name it.
    metric_route: String,
    started: Instant,
    bytes_out: u64,
    complete: bool,
}

impl Body for AuditedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes_out += d.len() as u64;
                }
                if this.inner.is_end_stream() {
                    // The last frame: on file before the client has it.
                    this.complete = true;
                    this.write();
                }
            }
            Poll::Ready(None) => {
                this.complete = true;
                this.write();
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl AuditedBody {
    /// Writes the events (once).
    fn write(&mut self) {
        let complete = self.complete || self.inner.is_end_stream();
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        for mut event in self.events.drain(..) {
            event.latency_ms = (latency_ms * 1000.0).round() / 1000.0;
            event.bytes_out = self.bytes_out;
            event.complete = complete;
            count(&self.state, &self.metric_route, &event);
            self.state.audit.record(event);
        }
    }
}

/// Counts one audited message in `drawbridge_requests_total`.
fn count(state: &SharedState, route: &str, event: &AuditEvent) {
    let method = match (&event.method, event.kind.as_deref()) {
        (Some(m), _) => m.as_str(),
        (None, Some("response" | "error")) => "response",
        // No JSON-RPC message: the HTTP method.
        (None, _) => event.http.split(' ').next().unwrap_or(""),
    };
    let decision = match event.decision.as_str() {
        "allow" if event.status >= 500 => metrics::Decision::error,
        "allow" => metrics::Decision::allow,
        _ => metrics::Decision::deny,
    };
    state.metrics.request(route, method, decision);
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        self.write();
    }
}
