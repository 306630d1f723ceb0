//! Phase 5: forward, and stream the answer back. A tunnel that died since
//! the last keep-alive (no stream opens) is skipped for another replica, if
//! one decides with the same policy, the request being whole; a pinned
//! session's replica is not replaced (its session is gone). An agent that
//! falls silent ([`forward::PEER_GONE_AFTER`]) is picked last until it is
//! heard from again, and a request that only reads goes elsewhere.

use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use http::{header, HeaderValue, Response};
use http_body_util::BodyExt;
use policy::Caller;
use protocol::{BodyKind, ExchangeHead, Identity};
use tunnel::TunnelBody;

use super::classify::Classified;
use super::decide::Allowed;
use super::route::{pick_agent, Routed};
use super::{Ask, Refusal};
use crate::agents::forward::{self, Upload};
use crate::agents::registry::AgentSession;
use crate::gateway::authenticated::Authenticated;
use crate::gateway::tool_filter::{self, RelayGate, Watch};
use crate::gateway::trail::Trail;
use crate::http::body::{BoxError, RespBody};
use crate::http::content_type::is_event_stream;
use crate::http::{sse_keepalive, standing_stream};
use crate::state::SharedState;

/// The agent's answer to an exchange, or why there is none.
type Answer = Result<Response<forward::Counted<TunnelBody>>, forward::ForwardError>;

/// An allowed request's body, and the `tools/list` answers to filter.
pub struct Pass {
    pub allowed: Allowed,
    pub upload: (Upload, BodyKind),
    pub watch: Option<Watch<RelayGate>>,
}

/// The body's `tools/list` requests, whose answers are filtered for
/// `caller` (by the policy, and the route's pins).
pub fn watch(
    state: &SharedState,
    body: &Classified,
    routed: &Routed,
    caller: &Caller<'_>,
    request_id: &str,
) -> Option<Watch<RelayGate>> {
    let Classified::Messages(m) = body else {
        return None;
    };
    tool_filter::relay_watch(state, &m.messages, &routed.engine, caller, request_id)
}

/// Sends the request to the routed agent (or another replica, see above)
/// and returns its answer, filtered and ready to stream.
pub async fn forward(
    state: &SharedState,
    ask: &Ask<'_>,
    parts: &Parts,
    mut routed: Routed,
    who: &Authenticated,
    pass: Pass,
    trail: &mut Trail,
) -> Result<Response<RespBody>, Refusal> {
    let Pass {
        allowed,
        upload: (body, body_kind),
        watch: mut tools_list,
    } = pass;
    let grants = std::mem::take(&mut routed.grants);
    let filtered = tools_list.is_some();
    // The head is built again for a second try rather than copied for
    // every request in case there is one.
    let make_head = || {
        let mut head = exchange_head(ask, parts, who, body_kind, grants.clone());
        if !allowed.policies.is_empty() {
            head.headers.push(protocol::Header {
                name: protocol::RELAY_RULES_HEADER.into(),
                value: allowed.policies.as_bytes().to_vec(),
            });
        }
        if filtered {
            // A tools/list answer is read by the relay: not compressed.
            head.headers
                .retain(|h| !h.name.eq_ignore_ascii_case("accept-encoding"));
        }
        head
    };
    let head = make_head();
    let request_session = head.session.clone();
    let sent = Instant::now();
    let session = request_session.as_deref();
    let (agent, answer) = send(
        state,
        ask,
        &routed,
        session,
        (head, &make_head),
        body,
        allowed.only_reads,
    )
    .await?;
    trail.timing.agent_us = Some(sent.elapsed().as_micros() as u64);
    forward::disconnect_on_violation(&agent, &answer);
    if let Some(watch) = tools_list.as_mut() {
        watch.accept_tool_changes(
            agent
                .served(ask.route)
                .is_some_and(|s| s.accept_tool_changes),
        );
    }
    let resp = match answer {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(request_id = ask.request_id, route = ask.route, session = agent.id, error = %e, "exchange failed");
            return Err(Refusal::Exchange(e));
        }
    };
    state.affinity.observe(
        ask.route,
        &agent,
        &parts.method,
        request_session.as_deref(),
        resp.status(),
        resp.headers(),
    );
    if state.cluster.is_some() {
        crate::gateway::session_holders::observed(
            state,
            ask.route,
            &agent,
            &parts.method,
            request_session.as_deref(),
            resp.status(),
            resp.headers(),
        )
        .await;
    }
    let mut resp = resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync());
    if let Some(word) = resp.headers_mut().remove(protocol::APPROVAL_HEADER) {
        trail.approval(&String::from_utf8_lossy(word.as_bytes()));
    }
    if let Some(watch) = tools_list {
        resp = watch.filter(resp).await;
    }
    if is_event_stream(resp.headers()) {
        // Proxies in front of the relay (nginx and friends) must not
        // buffer server-sent events.
        resp.headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        resp = resp.map(|b| sse_keepalive::wrap(b, state.config.sse_keepalive));
        if parts.method == http::Method::GET {
            // A standing stream expects no answer: it ends when the
            // relay shuts down (the client reconnects), rather than
            // holding up the drain.
            resp = resp.map(|b| standing_stream::end_on_shutdown(b, &state.shutdown));
        }
    }
    Ok(resp)
}

/// The exchange's head: the request as the agent gets it.
fn exchange_head(
    ask: &Ask<'_>,
    parts: &Parts,
    who: &Authenticated,
    body: BodyKind,
    grants: Vec<protocol::RouteGrant>,
) -> ExchangeHead {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .map(str::to_owned);
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    ExchangeHead {
        route: ask.route.to_owned(),
        method: parts.method.as_str().to_owned(),
        path: format!(
            "{}{query}",
            if ask.rest.is_empty() { "/" } else { ask.rest }
        ),
        headers: crate::http::headers::to_tunnel(&parts.headers, host.as_deref(), ask.peer),
        identity: Identity {
            subject: who.subject.clone(),
            kind: who.kind,
            credential_name: who.client_id.clone(),
            groups: who.groups.clone(),
        },
        request_id: ask.request_id.to_owned(),
        session: parts
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
        grants,
    }
}

/// The agent's answer to the exchange, and the agent that gave it. A
/// tunnel that turns out unusable is replaced by another replica deciding
/// with the same policy (at most three tries), when the body is whole; and
/// when its agent fell silent, only if the request `only_reads` (it is sent
/// again then). `head`: the first try's head, and how to make it again.
async fn send(
    state: &SharedState,
    ask: &Ask<'_>,
    routed: &Routed,
    request_session: Option<&str>,
    head: (ExchangeHead, &(dyn Fn() -> ExchangeHead + Sync)),
    body: Upload,
    only_reads: bool,
) -> Result<(Arc<AgentSession>, Answer), Refusal> {
    let (route, request_id) = (ask.route, ask.request_id);
    let route_policy = &routed.served.policy;
    let resend = match &body {
        forward::Upload::Whole(b) if only_reads => Some(b.clone()),
        _ => None,
    };
    // Sent again only with a whole body that only reads: otherwise the one
    // copy is moved into the exchange.
    let mut body = Some(body);
    let (head, make_head) = head;
    let mut head = Some(head);
    let mut agent = routed.agent.clone();
    let mut attempts = 0;
    let answer = loop {
        let give_up = resend.is_some() && state.registry.has_other_replica(route, agent.id);
        let failure = match forward::open(&agent, give_up).await {
            Ok(stream) => {
                let upload = match (body.take(), &resend) {
                    (Some(b), _) => Some(b),
                    (None, Some(b)) => Some(forward::Upload::Whole(b.clone())),
                    (None, None) => None,
                };
                let this_head = match head.take() {
                    Some(h) => Some(h),
                    None if resend.is_some() => Some(make_head()),
                    None => None,
                };
                let (Some(upload), Some(this_head)) = (upload, this_head) else {
                    break Err(forward::ForwardError::Open(
                        "the request was sent already".into(),
                    ));
                };
                let answer = forward::exchange(
                    stream,
                    this_head,
                    upload,
                    state.config.response_timeout,
                    &state.metrics,
                )
                .await;
                match answer {
                    // forward::exchange marked the agent silent.
                    Err(e @ forward::ForwardError::PeerGone(_)) => e,
                    other => break other,
                }
            }
            Err(e) => {
                agent.set_draining();
                e
            }
        };
        tracing::warn!(request_id, route, session = agent.id, error = %failure, "agent tunnel unusable; trying another replica");
        attempts += 1;
        if routed.pinned {
            if state.registry.pick(route).is_some() {
                if let Some(s) = request_session {
                    state.affinity.forget(route, s);
                }
                return Err(Refusal::SessionGone);
            }
            return Err(Refusal::AgentLost);
        }
        let next = pick_agent(state, route).filter(|(_, s)| Arc::ptr_eq(&s.policy, route_policy));
        match next {
            Some((a, _)) if attempts < 3 => agent = a,
            _ => return Err(Refusal::AgentLost),
        }
    };
    Ok((agent, answer))
}
