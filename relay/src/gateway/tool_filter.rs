//! `tools/list`, `resources/list`, `resources/templates/list` and
//! `prompts/list` answers filtered to what the caller may use, and the
//! errors of refused `tools/call`s.
//!
//! When a body holds such list requests ([`ListKind`]), the agent's answer
//! is rewritten ([`Watch::filter`]): in the response whose id is that of a
//! watched request, its list (`result.tools`, `result.resources`,
//! `result.resourceTemplates`, `result.prompts`) keeps only the items a
//! [`ToolGate`] lets through; every other member (`nextCursor`, `_meta`, …)
//! and every other message stay as they are.
//!
//! * `application/json` (one message or a batch): read whole, up to a cap;
//!   re-serialised only if a tool was removed, with a new `Content-Length`.
//! * `text/event-stream`: events are passed on one by one as each completes;
//!   the event carrying the watched response is rewritten, all others pass
//!   untouched. Once every watched id is answered the rest of the stream is
//!   passed through without looking.
//! * Fail closed: an answer (or, in a stream, one event) larger than the cap,
//!   a compressed answer, a body that fails while read, an answer of another
//!   media type (`application/json-rpc`, none, …) that is not empty, JSON
//!   that does not parse (numbers `serde_json` refuses, such as `1e400`,
//!   included), a JSON answer without the watched response, or an event whose
//!   data does not parse becomes a JSON-RPC error
//!   ([`TOOLS_LIST_UNFILTERABLE`]) instead of an unfiltered list.
//!
//! The relay's gate ([`RelayGate`]) hides tools whose definition changed
//! since they were pinned ([`crate::gateway::pins`]) and tools the policy would not
//! let this caller call ([`policy::Engine::tool_visible`]); resources and
//! resource templates the caller may not read
//! ([`policy::Engine::resource_visible`], a template by its `uriTemplate`),
//! and prompts the caller may not get ([`policy::Engine::prompt_visible`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::gateway::pins;
use crate::http::body::{full, BoxError, RespBody};
use crate::http::sse_events::{self, data_value, EventSplitter};
use policy::body::{BATCH_REFUSED, POLICY_DENIED};
use policy::jsonrpc::{Message, MessageKind, INVALID_PARAMS, TOOLS_CALL};
use policy::{Caller, Decision, Engine};

/// The `tools/list` method.
pub const TOOLS_LIST: &str = "tools/list";
/// JSON-RPC error code of a list answer the relay could not filter.
pub const TOOLS_LIST_UNFILTERABLE: i64 = -32603;

/// A list whose answers are filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `tools/list`: `result.tools`, by `name`.
    Tools,
    /// `resources/list`: `result.resources`, by `uri`.
    Resources,
    /// `resources/templates/list`: `result.resourceTemplates`, by
    /// `uriTemplate`.
    ResourceTemplates,
    /// `prompts/list`: `result.prompts`, by `name`.
    Prompts,
}

impl ListKind {
    const ALL: [ListKind; 4] = [
        ListKind::Tools,
        ListKind::Resources,
        ListKind::ResourceTemplates,
        ListKind::Prompts,
    ];

    /// The list a request method asks for.
    pub fn of(method: &str) -> Option<ListKind> {
        Self::ALL.into_iter().find(|k| k.method() == method)
    }

    /// Its JSON-RPC method.
    pub fn method(self) -> &'static str {
        match self {
            ListKind::Tools => TOOLS_LIST,
            ListKind::Resources => "resources/list",
            ListKind::ResourceTemplates => "resources/templates/list",
            ListKind::Prompts => "prompts/list",
        }
    }

    /// The member of `result` that holds the list.
    fn member(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Resources => "resources",
            ListKind::ResourceTemplates => "resourceTemplates",
            ListKind::Prompts => "prompts",
        }
    }

    /// The member of an item that names it.
    pub fn key(self) -> &'static str {
        match self {
            ListKind::Tools | ListKind::Prompts => "name",
            ListKind::Resources => "uri",
            ListKind::ResourceTemplates => "uriTemplate",
        }
    }
}

/// Decides which items of a list answer the caller sees.
pub trait ToolGate: Send + Unpin + 'static {
    /// Reads (and writes) what [`ToolGate::filter`] will need for the
    /// watched answers (`ids`) in `answer` (a message or a batch), before
    /// it filters them: the filter itself never waits.
    fn prepare<'a>(
        &'a mut self,
        answer: &'a Value,
        ids: &'a [Watched],
    ) -> futures::future::BoxFuture<'a, ()> {
        let _ = (answer, ids);
        Box::pin(async {})
    }

    /// Removes from `items` (of a `kind` list) those the caller may not
    /// see, keeping the order.
    fn filter(&mut self, kind: ListKind, items: &mut Vec<Value>);
}

/// The items of the watched `tools/list` answers (`ids`) in `answer`.
fn listed_tools<'a>(answer: &'a Value, ids: &[Watched]) -> Vec<&'a Value> {
    let messages = match answer {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    messages
        .into_iter()
        .filter(|m| m.get("method").is_none())
        .filter(|m| {
            m.get("id").is_some_and(|id| {
                ids.iter()
                    .any(|w| w.kind == ListKind::Tools && same_id(&w.id, id))
            })
        })
        .filter_map(|m| m.get("result")?.get(ListKind::Tools.member())?.as_array())
        .flatten()
        .collect()
}

/// The relay's gate: pins first (a changed tool is hidden from everybody),
/// then the policy (what this caller may call).
pub struct RelayGate {
    pub engine: Arc<Engine>,
    pub email: String,
    /// The identity provider's groups of `email`.
    pub groups: Vec<String>,
    pub client_id: String,
    pub route: String,
    pub route_owner: String,
    pub pins: pins::Inspector,
}

impl ToolGate for RelayGate {
    fn prepare<'a>(
        &'a mut self,
        answer: &'a Value,
        ids: &'a [Watched],
    ) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            let tools: Vec<Value> = listed_tools(answer, ids).into_iter().cloned().collect();
            if !tools.is_empty() {
                self.pins.prepare(&tools).await;
            }
        })
    }

    fn filter(&mut self, kind: ListKind, items: &mut Vec<Value>) {
        let hidden = match kind {
            ListKind::Tools => self.pins.hidden(items),
            _ => Default::default(),
        };
        let caller = Caller {
            email: &self.email,
            groups: &self.groups,
            client_id: &self.client_id,
            client_name: None,
            route: &self.route,
            route_owner: &self.route_owner,
            time: SystemTime::now(),
        };
        let engine = &self.engine;
        items.retain(|item| {
            item.get(kind.key())
                .and_then(Value::as_str)
                .is_some_and(|name| match kind {
                    ListKind::Tools => !hidden.contains(name) && engine.tool_visible(&caller, name),
                    ListKind::Resources | ListKind::ResourceTemplates => {
                        engine.resource_visible(&caller, name)
                    }
                    ListKind::Prompts => engine.prompt_visible(&caller, name),
                })
        });
    }
}

/// The watch of a body's list requests as the relay filters them:
/// pins of the caller's route, and the policy of `engine` for `caller`.
pub fn relay_watch(
    state: &crate::state::SharedState,
    messages: &[Message],
    engine: &Arc<Engine>,
    caller: &Caller<'_>,
    request_id: &str,
) -> Option<Watch<RelayGate>> {
    let gate = RelayGate {
        engine: engine.clone(),
        email: caller.email.to_owned(),
        groups: caller.groups.to_vec(),
        client_id: caller.client_id.to_owned(),
        route: caller.route.to_owned(),
        route_owner: caller.route_owner.to_owned(),
        pins: pins::Inspector {
            state: state.clone(),
            route: caller.route.to_owned(),
            request_id: request_id.to_owned(),
            identity: caller.email.to_owned(),
            client: caller.client_id.to_owned(),
            accept_changes: false,
            prepared: None,
        },
    };
    Watch::new(messages, gate, state.config.max_tools_list)
}

impl Watch<RelayGate> {
    /// The agent that answers was started with `--accept-tool-changes` for
    /// this route: changed definitions in its answer are pinned again.
    pub fn accept_tool_changes(&mut self, accept: bool) {
        self.gate.pins.accept_changes = accept;
    }
}

/// The list requests of one body whose answers are to be filtered.
pub struct Watch<G> {
    ids: Vec<Watched>,
    gate: G,
    cap: usize,
}

impl<G: ToolGate> Watch<G> {
    /// A watch over the list requests ([`ListKind`]) of `messages`; `None`
    /// if there are none.
    pub fn new(messages: &[Message], gate: G, cap: usize) -> Option<Watch<G>> {
        let ids: Vec<Watched> = messages
            .iter()
            .filter(|m| m.kind == MessageKind::Request)
            .filter_map(|m| {
                let kind = ListKind::of(m.method.as_deref()?)?;
                Some(Watched {
                    id: m.id.clone()?,
                    kind,
                })
            })
            .collect();
        (!ids.is_empty()).then_some(Watch { ids, gate, cap })
    }

    /// Filters the agent's answer (see the module docs).
    pub async fn filter(mut self, resp: Response<RespBody>) -> Response<RespBody> {
        if !resp.status().is_success() {
            return resp;
        }
        let media = content_type(resp.headers());
        let sse = media == "text/event-stream";
        if !sse && media != "application/json" {
            if resp.body().is_end_stream() {
                return resp;
            }
            let shown = if media.is_empty() {
                "none"
            } else {
                media.as_str()
            };
            return self.unfilterable(&format!(
                "its media type ({shown}) is neither application/json nor text/event-stream"
            ));
        }
        if let Some(coding) = resp
            .headers()
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .filter(|c| !c.trim().eq_ignore_ascii_case("identity"))
        {
            return self.unfilterable(&format!("it is compressed ({coding})"));
        }
        if sse {
            let (mut parts, body) = resp.into_parts();
            parts.headers.remove(header::CONTENT_LENGTH);
            let filter = SseFilter::new(body, self.ids, self.gate, self.cap);
            // A task reads the stream: the gate may wait on the store
            // between events, which a body's poll cannot.
            let (tx, rx) = futures::channel::mpsc::channel(4);
            tokio::spawn(filter.run(tx));
            let body = http_body_util::StreamBody::new(rx);
            return Response::from_parts(parts, body.boxed_unsync());
        }
        let (mut parts, mut body) = resp.into_parts();
        let mut read = BytesMut::new();
        while let Some(frame) = body.frame().await {
            match frame.map(Frame::into_data) {
                Ok(Ok(data)) => {
                    if read.len() + data.len() > self.cap {
                        return self.unfilterable(&format!("it exceeds {} bytes", self.cap));
                    }
                    read.extend_from_slice(&data);
                }
                Ok(Err(_trailers)) => {}
                Err(e) => {
                    return self.unfilterable(&format!("the agent's answer failed: {e}"));
                }
            }
        }
        let bytes = read.freeze();
        let bytes = match serde_json::from_slice::<Value>(&bytes) {
            Ok(mut v) => {
                self.gate.prepare(&v, &self.ids).await;
                let changed = rewrite(&mut v, &mut self.ids, &mut self.gate);
                if !self.ids.is_empty() {
                    let why = format!(
                        "it holds no answer to the {} request",
                        self.ids[0].kind.method()
                    );
                    return self.unfilterable(&why);
                }
                if changed {
                    Bytes::from(v.to_string())
                } else {
                    bytes
                }
            }
            Err(e) => {
                return self.unfilterable(&format!("it is not JSON the relay can read ({e})"))
            }
        };
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        Response::from_parts(parts, full(bytes))
    }

    /// The answer that replaces one the relay cannot filter: a JSON-RPC error
    /// for the watched request (HTTP 502: the agent's answer is at fault).
    fn unfilterable(&self, why: &str) -> Response<RespBody> {
        let body = Value::from(unfilterable_errors(&self.ids, why));
        let body = match body {
            Value::Array(mut one) if one.len() == 1 => one.remove(0),
            many => many,
        };
        let mut resp = Response::new(full(Bytes::from(body.to_string())));
        *resp.status_mut() = StatusCode::BAD_GATEWAY;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

/// A watched list request: its id, and which list.
#[derive(Debug, Clone)]
pub struct Watched {
    pub id: Value,
    pub kind: ListKind,
}

fn unfilterable_errors(ids: &[Watched], why: &str) -> Vec<Value> {
    ids.iter()
        .map(|w| {
            serde_json::json!({"jsonrpc": "2.0", "id": w.id, "error": {
                "code": TOOLS_LIST_UNFILTERABLE,
                "message": format!("the relay cannot filter this {} answer: {why}; refusing to pass it unfiltered", w.kind.method()),
            }})
        })
        .collect()
}

/// The media type of a response, lowercased, without parameters.
fn content_type(headers: &http::HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Filters the watched responses in a message or a batch. Answered ids leave
/// `ids`. True if an item was removed.
pub fn rewrite(value: &mut Value, ids: &mut Vec<Watched>, gate: &mut dyn ToolGate) -> bool {
    match value {
        Value::Array(items) => {
            let mut changed = false;
            for item in items {
                changed |= rewrite_one(item, ids, gate);
            }
            changed
        }
        one => rewrite_one(one, ids, gate),
    }
}

fn rewrite_one(message: &mut Value, ids: &mut Vec<Watched>, gate: &mut dyn ToolGate) -> bool {
    if message.get("method").is_some() {
        return false; // a request or notification of the server, not an answer
    }
    let Some(pos) = message
        .get("id")
        .and_then(|id| ids.iter().position(|w| same_id(&w.id, id)))
    else {
        return false;
    };
    let kind = ids.remove(pos).kind;
    let Some(items) = message
        .get_mut("result")
        .and_then(|r| r.get_mut(kind.member()))
        .and_then(Value::as_array_mut)
    else {
        return false; // an error, or no list to filter
    };
    let before = items.len();
    gate.filter(kind, items);
    items.len() != before
}

/// Whether a response's id answers a watched request: equal, or the same
/// number written another way (`1` and `1.0`: JavaScript clients match them).
fn same_id(watched: &Value, id: &Value) -> bool {
    watched == id || matches!((watched.as_f64(), id.as_f64()), (Some(a), Some(b)) if a == b)
}

/// A server-sent event stream whose watched responses are filtered.
struct SseFilter<G> {
    inner: RespBody,
    ids: Vec<Watched>,
    gate: G,
    /// The stream's events, each up to the cap.
    events: EventSplitter,
    out: VecDeque<Bytes>,
    /// Every watched id is answered (or the stream failed closed): pass on.
    through: bool,
    /// No more frames from `inner`.
    ended: bool,
}

impl<G: ToolGate> SseFilter<G> {
    fn new(inner: RespBody, ids: Vec<Watched>, gate: G, cap: usize) -> Self {
        SseFilter {
            inner,
            ids,
            gate,
            events: EventSplitter::new(cap),
            out: VecDeque::new(),
            through: false,
            ended: false,
        }
    }

    /// Sends the filtered stream to `tx` until it ends, fails, or `tx`'s
    /// receiver (the client's response) is gone.
    async fn run(mut self, mut tx: futures::channel::mpsc::Sender<Result<Frame<Bytes>, BoxError>>) {
        use futures::SinkExt as _;
        loop {
            while let Some(b) = self.out.pop_front() {
                if tx.send(Ok(Frame::data(b))).await.is_err() {
                    return;
                }
            }
            if self.ended {
                return;
            }
            match self.inner.frame().await {
                None => {
                    self.ended = true;
                    self.feed(Bytes::new(), true).await;
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.feed(data, false).await,
                    Err(frame) => {
                        if tx.send(Ok(frame)).await.is_err() {
                            return;
                        }
                    }
                },
            }
        }
    }

    /// Takes in bytes of the stream; queues what may go out.
    async fn feed(&mut self, data: Bytes, at_eof: bool) {
        if self.through {
            if !data.is_empty() {
                self.out.push_back(data);
            }
            return;
        }
        self.events.push(&data);
        loop {
            let event = match self.events.next_event(at_eof) {
                Ok(Some(event)) => event,
                Ok(None) => return,
                // An unfinished last event (at the end of the stream) is
                // judged like a complete one: most clients drop it, some may
                // not.
                Err(too_large) => return self.fail_closed(&too_large.to_string()),
            };
            let Some(event) = self.event(event).await else {
                return self.fail_closed("an event of the stream is not JSON the relay can read");
            };
            self.out.push_back(event);
            if self.ids.is_empty() {
                self.through = true;
                let rest = self.events.take_rest();
                if !rest.is_empty() {
                    self.out.push_back(rest);
                }
                return;
            }
        }
    }

    /// An event that cannot be inspected while answers are watched: the
    /// watched answers become errors, and the stream ends.
    fn fail_closed(&mut self, why: &str) {
        let errors = unfilterable_errors(&self.ids, why);
        for e in errors {
            self.out.push_back(Bytes::from(format!("data: {e}\n\n")));
        }
        self.events.take_rest();
        self.ids.clear();
        self.through = true;
        self.ended = true;
    }

    /// One complete event: rewritten if it carries a watched response;
    /// `None` if its data is not JSON (it cannot be told whether it does).
    /// An event without data, or with empty data (a priming event for
    /// resumption), passes.
    async fn event(&mut self, event: Bytes) -> Option<Bytes> {
        let lines = sse_events::lines(&event);
        let data: Vec<&[u8]> = lines.iter().filter_map(|l| data_value(l)).collect();
        if data.is_empty() {
            return Some(event);
        }
        let joined = data.join(&b"\n"[..]);
        if joined.iter().all(u8::is_ascii_whitespace) {
            return Some(event);
        }
        let mut value = serde_json::from_slice::<Value>(&joined).ok()?;
        self.gate.prepare(&value, &self.ids).await;
        if !rewrite(&mut value, &mut self.ids, &mut self.gate) {
            return Some(event);
        }
        let mut out = Vec::with_capacity(event.len());
        let mut wrote = false;
        for line in lines {
            if data_value(line).is_some() {
                if !wrote {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(value.to_string().as_bytes());
                    out.push(b'\n');
                    wrote = true;
                }
                continue;
            }
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out.push(b'\n');
        Some(Bytes::from(out))
    }
}

/// The JSON-RPC error of one refused request: a call to a tool the caller
/// cannot see is an unknown tool (-32602, nothing says it exists); a call
/// refused by its tool's pin says how to approve the change; every other
/// refusal names the policies that decided ([`POLICY_DENIED`]).
pub fn refusal(
    message: &Message,
    decision: &Decision,
    route: &str,
    visible: &dyn Fn(&str) -> bool,
) -> Value {
    let error = match (message.method.as_deref(), message.target.as_deref()) {
        (Some(TOOLS_CALL), Some(tool))
            if decision.policies.len() == 1
                && [pins::PIN_CHANGED, pins::PIN_UNAVAILABLE]
                    .contains(&decision.policies[0].as_str()) =>
        {
            serde_json::json!({
                "code": POLICY_DENIED,
                "message": pins::refusal_message(route, tool, &decision.policies[0]),
                "data": {"policies": decision.policies},
            })
        }
        (Some(TOOLS_CALL), Some(tool))
            if !decision.policies.iter().any(|p| p == BATCH_REFUSED) && !visible(tool) =>
        {
            serde_json::json!({
                "code": INVALID_PARAMS,
                "message": format!("Unknown tool: {tool}"),
            })
        }
        _ => serde_json::json!({
            "code": POLICY_DENIED,
            "message": decision.message(),
            "data": {"policies": decision.policies},
        }),
    };
    serde_json::json!({"jsonrpc": "2.0", "id": message.id, "error": error})
}

/// The answer to a refused body: one JSON-RPC error per request (see
/// [`refusal`]), a single object for a single message, an array for a
/// batch; `None` when the body held only notifications and responses.
pub fn refusals(
    messages: &[Message],
    decisions: &[Decision],
    route: &str,
    visible: &dyn Fn(&str) -> bool,
) -> Option<Value> {
    let errors: Vec<Value> = messages
        .iter()
        .zip(decisions)
        .filter(|(m, _)| m.kind == MessageKind::Request)
        .map(|(m, d)| refusal(m, d, route, visible))
        .collect();
    match errors.len() {
        0 => None,
        1 if messages.len() == 1 => errors.into_iter().next(),
        _ => Some(Value::Array(errors)),
    }
}

#[cfg(test)]
#[path = "tool_filter_tests.rs"]
mod tests;
