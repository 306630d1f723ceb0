//! The legacy HTTP+SSE transport (MCP 2024-11-05), which older clients
//! still speak, served by the relay on top of Streamable HTTP to the agent.
//!
//! * `GET /mcp/<route>` (the route's own URL, not a path below it) with `Accept: text/event-stream`, no `Mcp-Session-Id`
//!   and no `MCP-Protocol-Version` opens a stream held by the relay. Its first
//!   event is `endpoint`, whose data is the URL to POST to:
//!   `/mcp/<route>?session_id=<32 hex digits>` (on a node of a cluster,
//!   `<node id>-<32 hex digits>`: see [`holding_node`]).
//! * Each POST to that URL goes through the gateway like any other (token —
//!   the identity that opened the stream, and no other —, body cap, JSON-RPC
//!   classification, policy, audit), is forwarded to the agent as an ordinary
//!   Streamable HTTP POST carrying the upstream `Mcp-Session-Id` learned from
//!   the `initialize` answer, and is itself answered 202. Whatever the gateway
//!   answers (the agent's JSON or SSE answer, or a policy denial) is delivered
//!   as `event: message` events on the stream.
//! * Closing the stream ends the session: the upstream session is DELETEd.
//!
//! Why the endpoint cannot be mistaken for Streamable HTTP: a Streamable HTTP
//! client POSTs to the route URL exactly as given and carries its session in
//! the `Mcp-Session-Id` header, never in the query; a Streamable HTTP GET
//! stream carries `Mcp-Session-Id` (stateful servers) or `MCP-Protocol-Version`
//! (every revision since 2025-06-18). So a POST whose query has `session_id`
//! is legacy (one that also has `Mcp-Session-Id` is refused as ambiguous), and
//! the `session_id` parameter is removed before forwarding, so the agent never
//! sees it. `session_id` is also the name legacy clients look for (the Python
//! SDK reports it as the session id).
//!
//! Bounds: [`MAX_SESSIONS_PER_IDENTITY`] streams per identity, at most
//! [`MAX_IN_FLIGHT`] POSTs per stream whose answers are not yet delivered
//! (more get 429), and [`QUEUE`] events waiting for a slow client; beyond
//! that, delivering waits, which holds the tunnel stream and so pushes back
//! on the agent through flow control.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use protocol::{BodyKind, ExchangeHead, Identity, IdentityKind};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::agents::forward;
use crate::gateway::authenticated::Authenticated;
use crate::gateway::trail::Trail;
use crate::http::body::{empty, BoxError, RespBody};
use crate::http::content_type::{is_event_stream, is_json};
use crate::http::response::error;
use crate::http::sse_events::{self, EventSplitter};
use crate::http::{headers, sse_keepalive};
pub use crate::sessions::legacy::{LegacySession, LegacySessions};
use crate::state::SharedState;
use crate::store::token;

/// The query parameter naming a legacy session in the endpoint URL.
pub const SESSION_PARAM: &str = "session_id";
/// POSTs of one stream whose answers are still being delivered; one more gets 429.
pub const MAX_IN_FLIGHT: usize = 16;
/// Events queued for one stream before delivering waits.
pub const QUEUE: usize = 32;
/// The largest single message delivered on a stream.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Cap on one event of an agent's stream, its field names and line ends
/// included: room for a [`MAX_MESSAGE`] of data over many `data:` lines.
const MAX_EVENT: usize = 2 * MAX_MESSAGE;

/// A POST to a legacy session, admitted (it holds one in-flight slot).
pub struct LegacyPost {
    session: Arc<LegacySession>,
    _permit: OwnedSemaphorePermit,
}

/// What a request is, as far as the legacy transport is concerned.
pub enum Legacy {
    /// Not legacy: the ordinary Streamable HTTP path.
    No,
    /// Opens a legacy stream.
    Open,
    /// A message POSTed to an open legacy session.
    Post(LegacyPost),
}

/// Why a message to a legacy session endpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyRefusal {
    /// Anything but a POST.
    NotPost,
    /// Both `Mcp-Session-Id` and `?session_id=`.
    Ambiguous,
    /// Not `Content-Type: application/json`.
    NotJson,
    /// No such session of this caller on this route (or of someone else).
    UnknownSession(String),
    /// [`MAX_IN_FLIGHT`] messages of the session wait for their answers.
    TooManyInFlight,
}

impl LegacyRefusal {
    pub fn status(&self) -> StatusCode {
        match self {
            LegacyRefusal::NotPost => StatusCode::METHOD_NOT_ALLOWED,
            LegacyRefusal::Ambiguous => StatusCode::BAD_REQUEST,
            LegacyRefusal::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            LegacyRefusal::UnknownSession(_) => StatusCode::NOT_FOUND,
            LegacyRefusal::TooManyInFlight => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The error code of the JSON answer.
    pub fn code(&self) -> &'static str {
        match self {
            LegacyRefusal::NotPost => "method_not_allowed",
            LegacyRefusal::Ambiguous => "ambiguous_session",
            LegacyRefusal::NotJson => "unsupported_media_type",
            LegacyRefusal::UnknownSession(_) => "unknown_session",
            LegacyRefusal::TooManyInFlight => "too_many_in_flight",
        }
    }

    /// The sentence of the JSON answer, for a message to `route`.
    pub fn message(&self, route: &str) -> String {
        match self {
            LegacyRefusal::NotPost => {
                "a legacy SSE session endpoint only takes POSTed JSON-RPC messages".into()
            }
            LegacyRefusal::Ambiguous => "a request carries either Mcp-Session-Id (Streamable HTTP) or ?session_id= (legacy HTTP+SSE), not both".into(),
            LegacyRefusal::NotJson => "POST JSON-RPC messages to a legacy SSE session with Content-Type: application/json".into(),
            LegacyRefusal::UnknownSession(id) => format!(
                "no open legacy SSE session {id:?} for this token on route '{route}'; open one with GET /mcp/{route} (Accept: text/event-stream)"
            ),
            LegacyRefusal::TooManyInFlight => format!(
                "this legacy SSE session already has {MAX_IN_FLIGHT} messages whose answers are not delivered; wait for them"
            ),
        }
    }
}

/// Tells legacy requests apart. Runs after authentication: `caller` is who
/// asks.
pub fn recognise(
    state: &SharedState,
    req: &http::request::Parts,
    route: &str,
    rest: &str,
    mcp: bool,
    caller: &Authenticated,
) -> Result<Legacy, LegacyRefusal> {
    // Only an MCP route's own URL: paths below it belong to the local server,
    // and a plain HTTP route is not MCP.
    if !mcp || (!rest.is_empty() && rest != "/") {
        return Ok(Legacy::No);
    }
    let h = &req.headers;
    let Some(id) = session_param(&req.uri) else {
        let opens = req.method == Method::GET
            && accepts_event_stream(h)
            && !h.contains_key("mcp-session-id")
            && !h.contains_key("mcp-protocol-version");
        return Ok(if opens { Legacy::Open } else { Legacy::No });
    };
    if req.method != Method::POST {
        return Err(LegacyRefusal::NotPost);
    }
    if h.contains_key("mcp-session-id") {
        return Err(LegacyRefusal::Ambiguous);
    }
    if !is_json(h) {
        return Err(LegacyRefusal::NotJson);
    }
    let session = state.legacy.get(&id);
    let Some(session) = session.filter(|s| s.owner == caller.subject && s.route == route) else {
        // The same answer whether it never existed or belongs to someone
        // else: a session id is not a credential, and is not confirmed.
        return Err(LegacyRefusal::UnknownSession(id));
    };
    let Ok(permit) = session.in_flight.clone().try_acquire_owned() else {
        return Err(LegacyRefusal::TooManyInFlight);
    };
    Ok(Legacy::Post(LegacyPost {
        session,
        _permit: permit,
    }))
}

/// The upstream MCP session of `caller`'s legacy session on `route` that
/// `uri` names (`?session_id=`), once the agent's `initialize` answer gave one:
/// its messages go to the replica holding it (see [`crate::sessions::affinity`]).
pub fn upstream_session(
    state: &SharedState,
    uri: &http::Uri,
    route: &str,
    caller: &str,
) -> Option<String> {
    let session = state.legacy.get(&session_param(uri)?)?;
    if session.owner != caller || session.route != route {
        return None;
    }
    let up = session.upstream().session?;
    up.to_str().ok().map(str::to_owned)
}

/// Ends `caller`'s legacy stream that `uri` names: its upstream session is
/// gone with its replica, and a legacy client starts again when its stream
/// ends.
pub fn end_session_of(state: &SharedState, uri: &http::Uri, route: &str, caller: &str) {
    let Some(session) = session_param(uri).and_then(|id| state.legacy.get(&id)) else {
        return;
    };
    if session.owner == caller && session.route == route {
        tracing::info!(
            route,
            session = session.id,
            "legacy SSE: the replica holding this session is gone; ending the stream"
        );
        session.closed.cancel();
    }
}

/// Opens a legacy stream for `caller` on `route`: the `endpoint` event, then
/// the answers to what is POSTed to it, with keep-alive comments.
pub fn open(
    state: &SharedState,
    route: &str,
    caller: &Authenticated,
    peer: SocketAddr,
) -> Response<RespBody> {
    if state.registry.pick(route).is_none() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "agent_unavailable",
            &format!("no agent is connected for route '{route}'"),
        );
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let session = Arc::new(LegacySession::new(
        new_session_id(state),
        route.to_owned(),
        caller.subject.clone(),
        caller.client_id.clone(),
        tx,
        MAX_IN_FLIGHT,
    ));
    if let Err(open) = state.legacy.insert(session.clone()) {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_sessions",
            &format!(
                "{} already has {open} open legacy SSE streams (the most allowed); close one first",
                caller.subject
            ),
        );
    }
    tracing::info!(
        route,
        session = session.id,
        owner = session.owner,
        "legacy SSE stream opened"
    );
    let endpoint = format!(
        "event: endpoint\ndata: /mcp/{route}?{SESSION_PARAM}={}\n\n",
        session.id
    );
    let guard = StreamGuard {
        state: state.clone(),
        session,
        peer,
    };
    let shutdown = state.shutdown.clone();
    let ended = guard.session.closed.clone();
    let stream = futures::stream::unfold(
        (Some(Bytes::from(endpoint)), rx, guard),
        move |(first, mut rx, guard)| {
            let shutdown = shutdown.clone();
            let ended = ended.clone();
            async move {
                let next = match first {
                    Some(first) => Some(first),
                    None => tokio::select! {
                        m = rx.recv() => m,
                        _ = shutdown.cancelled() => None,
                        _ = ended.cancelled() => None,
                    },
                };
                next.map(|b| (Ok::<_, BoxError>(Frame::data(b)), (None, rx, guard)))
            }
        },
    );
    let body = sse_keepalive::wrap(
        StreamBody::new(stream).boxed_unsync(),
        state.config.sse_keepalive,
    );
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// Makes a legacy POST an ordinary Streamable HTTP one for the agent: the
/// upstream session and protocol version, an `Accept` a Streamable HTTP server
/// takes, and no `session_id` parameter.
pub fn prepare(post: &LegacyPost, parts: &mut http::request::Parts) {
    let up = post.session.upstream();
    let h = &mut parts.headers;
    if let Some(s) = up.session {
        h.insert("mcp-session-id", s);
    }
    if let Some(v) = up.protocol_version {
        if !h.contains_key("mcp-protocol-version") {
            h.insert("mcp-protocol-version", v);
        }
    }
    h.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k != SESSION_PARAM)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let mut pq = parts.uri.path().to_owned();
    if !query.is_empty() {
        pq.push('?');
        pq.push_str(
            &url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query)
                .finish(),
        );
    }
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.path_and_query = pq.parse().ok();
    if let Ok(u) = http::Uri::from_parts(uri) {
        parts.uri = u;
    }
}

/// Delivers the gateway's answer to a legacy POST onto its stream and answers
/// the POST 202. An answer that is not a success (a refusal before the agent,
/// an agent error) is the POST's own answer instead.
///
/// Everything the gateway would have sent a Streamable HTTP client arrives
/// here whole, so any rewriting done on that path (e.g. `tools/list`
/// filtering) applies to legacy clients too.
pub fn deliver(
    state: &SharedState,
    post: LegacyPost,
    response: Response<RespBody>,
) -> Response<RespBody> {
    if !response.status().is_success() {
        return response;
    }
    let session = post.session.clone();
    if let Some(id) = response.headers().get("mcp-session-id") {
        session.learn_session(id.clone());
    }
    let event_stream = is_event_stream(response.headers());
    let body = response.into_body();
    state.requests.spawn(async move {
        let closed = session.closed.clone();
        tokio::select! {
            _ = pump(&session, body, event_stream) => {}
            _ = closed.cancelled() => {}
        }
        drop(post);
    });
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

/// Carries one answer's messages onto the stream.
async fn pump(session: &LegacySession, mut body: RespBody, event_stream: bool) {
    if !event_stream {
        let mut bytes = BytesMut::new();
        while let Some(frame) = body.frame().await {
            match frame.map(Frame::into_data) {
                Ok(Ok(d)) if bytes.len() + d.len() <= MAX_MESSAGE => bytes.extend_from_slice(&d),
                Ok(Ok(_)) => {
                    tracing::warn!(
                        session = session.id,
                        "legacy SSE: the agent's answer exceeds {MAX_MESSAGE} bytes; dropped"
                    );
                    return;
                }
                Ok(Err(_)) => {}
                Err(e) => {
                    tracing::warn!(session = session.id, error = %e, "legacy SSE: the agent's answer could not be read");
                    return;
                }
            }
        }
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            session.send(&bytes).await;
        }
        return;
    }
    let mut events = EventSplitter::new(MAX_EVENT);
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(f) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Err(e) => {
                tracing::warn!(session = session.id, error = %e, "legacy SSE: the agent's event stream failed");
                return;
            }
        };
        events.push(&data);
        loop {
            let event = match events.next_event(false) {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(session = session.id, error = %e, "legacy SSE: dropping the agent's answer");
                    return;
                }
            };
            // Events without data (priming events, say) carry no message.
            let Some(message) = sse_events::data(&event).filter(|m| !m.is_empty()) else {
                continue;
            };
            if message.len() > MAX_MESSAGE {
                tracing::warn!(
                    session = session.id,
                    "legacy SSE: an event of the agent's stream exceeds {MAX_MESSAGE} bytes; dropping the agent's answer"
                );
                return;
            }
            if !session.send(&message).await {
                return;
            }
        }
    }
}

/// Ends a session when its stream's body is dropped (the client went away,
/// or the relay shuts down).
struct StreamGuard {
    state: SharedState,
    session: Arc<LegacySession>,
    peer: SocketAddr,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let s = &self.session;
        self.state.legacy.remove(&s.id);
        s.closed.cancel();
        tracing::info!(route = s.route, session = s.id, "legacy SSE stream closed");
        let up = s.upstream();
        let Some(upstream_session) = up.session else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(end_upstream(
                self.state.clone(),
                s.clone(),
                upstream_session,
                up.protocol_version,
                self.peer,
            ));
        }
    }
}

/// DELETEs the upstream session of a closed legacy stream (audited like any
/// request).
async fn end_upstream(
    state: SharedState,
    session: Arc<LegacySession>,
    upstream_session: HeaderValue,
    protocol_version: Option<HeaderValue>,
    peer: SocketAddr,
) {
    let request_id = token::random_hex(8);
    let path = format!("/mcp/{}", session.route);
    let mut trail = Trail::new(&request_id, &Method::DELETE, &path, Instant::now());
    trail.route = session.route.clone();
    trail.identity = session.owner.clone();
    trail.client = session.client.clone();
    trail.allow("legacy-stream-closed");
    let mut hm = HeaderMap::new();
    hm.insert("mcp-session-id", upstream_session.clone());
    if let Some(v) = protocol_version {
        hm.insert("mcp-protocol-version", v);
    }
    let holder = match state.affinity.target(
        &state.registry,
        &session.route,
        upstream_session.to_str().ok(),
    ) {
        crate::sessions::affinity::Target::Pinned(agent, _) => Some(agent),
        crate::sessions::affinity::Target::Any => state.registry.pick(&session.route),
        crate::sessions::affinity::Target::Gone => None,
    };
    let response = match holder {
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "agent_unavailable",
            "no agent to end the session on",
        ),
        Some(agent) => {
            let head = ExchangeHead {
                route: session.route.clone(),
                method: "DELETE".into(),
                path: "/".into(),
                headers: headers::to_tunnel(&hm, None, peer),
                identity: Identity {
                    subject: session.owner.clone(),
                    kind: IdentityKind::ClientToken,
                    credential_name: session.client.clone(),
                    groups: Vec::new(),
                },
                request_id: request_id.clone(),
                session: upstream_session.to_str().ok().map(str::to_owned),
                body: BodyKind::Empty,
                // Ending the session is plumbing the owner's policy decides.
                grants: Vec::new(),
            };
            let answer = match forward::open(&agent, false).await {
                Ok(stream) => {
                    forward::exchange(
                        stream,
                        head,
                        forward::Upload::Whole(Bytes::new()),
                        state.config.response_timeout,
                        &state.metrics,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            forward::disconnect_on_violation(&agent, &answer);
            match answer {
                Ok(r) => r.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()),
                Err(e) => error(e.status(), "agent_error", &e.to_string()),
            }
        }
    };
    if let Ok(s) = upstream_session.to_str() {
        state.affinity.forget(&session.route, s);
    }
    tracing::debug!(
        request_id,
        session = session.id,
        status = response.status().as_u16(),
        "legacy SSE: upstream session deleted"
    );
    let response = trail.attach(&state, response);
    let _ = response.into_body().collect().await;
}

/// A new session's id: 32 random hex digits; on a node of a cluster, after
/// the node's id and a `-`, so that any node can tell which one holds the
/// stream ([`holding_node`]). The random part is the same either way.
fn new_session_id(state: &SharedState) -> String {
    let random = token::random_hex(16);
    match &state.cluster {
        Some(node) => format!("{}{NODE_SEPARATOR}{random}", node.id),
        None => random,
    }
}

/// Between the node's id and the random part of a session id.
const NODE_SEPARATOR: char = '-';

/// For a message POSTed to a legacy session that this node does not hold:
/// the id of the node its id names (`<node id>-<32 hex digits>`), the one
/// that opened the stream. `None`: not a legacy message, a session this
/// node holds or that names it, or an id of another shape. Nothing here
/// proves the node exists: the caller forwards only to a live node.
pub fn holding_node(
    state: &SharedState,
    this_node: &str,
    method: &Method,
    uri: &http::Uri,
    rest: &str,
) -> Option<String> {
    if *method != Method::POST || (!rest.is_empty() && rest != "/") {
        return None;
    }
    let id = session_param(uri)?;
    let (node, random) = id.split_once(NODE_SEPARATOR)?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if node == this_node || !hex(node, 16) || !hex(random, 32) || state.legacy.get(&id).is_some() {
        return None;
    }
    Some(node.to_owned())
}

/// The legacy session named in a request's query.
fn session_param(uri: &http::Uri) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == SESSION_PARAM)
        .map(|(_, v)| v.into_owned())
}

fn accepts_event_stream(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| {
            m.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_parameter_is_found_and_only_it() {
        let uri: http::Uri = "/mcp/db?x=1&session_id=abc".parse().expect("uri");
        assert_eq!(session_param(&uri).as_deref(), Some("abc"));
        let uri: http::Uri = "/mcp/db?sessionid=abc".parse().expect("uri");
        assert_eq!(session_param(&uri), None);
        let uri: http::Uri = "/mcp/db".parse().expect("uri");
        assert_eq!(session_param(&uri), None);
    }

    #[test]
    fn accept_lists_are_read() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream;q=0.9"),
        );
        assert!(accepts_event_stream(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert!(!accepts_event_stream(&h));
    }
}
