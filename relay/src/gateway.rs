//! The relay's public HTTPS front: `/mcp/<route>` → authenticate → pick an
//! agent → forward → stream the answer back.
//!
//! Read top to bottom, [`handle`] is the whole request path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use protocol::{BodyKind, ExchangeHead, Identity, IdentityKind, UpstreamKind};

use crate::affinity::{self, Target};
use crate::authenticated::Authenticated;
use crate::early_answer;
use crate::forward;
use crate::grants_api;
use crate::headers;
use crate::http::body::{full, BoxError, RespBody};
use crate::http::content_type::{is_event_stream, is_json};
use crate::http::response::error;
use crate::legacy_sse::{self, Legacy, LegacyPost};
use crate::oauth;
use crate::oauth::scope::{self, Access};
use crate::oauth_store;
use crate::pins;
use crate::registry::{AgentSession, ServedRoute};
use crate::state::SharedState;
use crate::token::{self, TokenKind};
use crate::tool_filter;
use crate::trail::Trail;
use crate::{cors, sse_keepalive, standing_stream};
use policy::jsonrpc;
use policy::route_path;
use policy::sql::{self, SqlFacts};
use policy::{Caller, Decision, Request as PolicyRequest};

pub async fn handle(
    state: SharedState,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let started = Instant::now();
    let request_id = token::random_hex(8);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut trail = Trail::new(&request_id, &method, &path, started);
    let origin = cors::allowed_origin(&state.origins, req.headers());
    let mut legacy = None;
    let response = route_request(&state, peer, req, &request_id, &mut trail, &mut legacy).await;
    let timing = trail.timing;
    let response = trail.attach(&state, response);
    // A message POSTed to a legacy SSE session is answered on its stream.
    let mut response = match legacy {
        Some(post) => legacy_sse::deliver(&state, post, response),
        None => response,
    };
    cors::decorate(response.headers_mut(), origin.as_ref());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    tracing::info!(
        request_id,
        %peer,
        %method,
        path,
        status = response.status().as_u16(),
        head_us = started.elapsed().as_micros() as u64,
        policy_us = timing.policy_us,
        agent_us = timing.agent_us,
        "request"
    );
    Ok(response)
}

async fn route_request(
    state: &SharedState,
    peer: SocketAddr,
    req: Request<Incoming>,
    request_id: &str,
    trail: &mut Trail,
    legacy: &mut Option<LegacyPost>,
) -> Response<RespBody> {
    let path = req.uri().path().to_owned();
    let path = path.as_str();
    if path == "/healthz" {
        trail.skip();
        return text(StatusCode::OK, "ok\n");
    }
    if oauth::serves(path) {
        trail.skip();
        return oauth::handle(state, peer, req).await;
    }
    if grants_api::serves(path) {
        trail.skip();
        return grants_api::handle(state, req).await;
    }
    let Some((route, rest)) = split_route(path) else {
        trail.skip();
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such path on this relay; routes live under /mcp/<route>",
        );
    };
    if protocol::validate_route_name(route).is_err() {
        trail.skip();
        return error(
            StatusCode::NOT_FOUND,
            "unknown_route",
            &format!("no route named {route:?} on this relay"),
        );
    }
    let route = route.to_owned();
    let rest = rest.to_owned();
    trail.route = route.clone();

    // 0. Nothing is served that cannot be audited.
    if !state.audit.healthy() {
        trail.deny("audit-unavailable");
        let refusal = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the relay cannot write its audit log; refusing requests until it can",
        );
        return early_answer::after_body(req, refusal).await;
    }

    // 0b. Browsers: a foreign Origin is refused before anything else, and
    //     a preflight is answered without a token (see cors.rs, origin.rs).
    if let Some(refusal) = state.origins.refuse(req.headers()) {
        trail.deny("origin-not-allowed");
        return refusal;
    }
    if cors::is_preflight(req.method()) {
        trail.skip();
        return cors::preflight();
    }

    // 1. Who is asking.
    let caller_id = match authenticate(state, req.headers(), &route).await {
        Ok(t) => t,
        Err(resp) => {
            trail.deny("authentication");
            // Read the body first: HTTP/2 would reset the stream under the
            // answer, and HTTP/1.1 could not carry on with the connection.
            return early_answer::after_body(req, *resp).await;
        }
    };
    trail.identity = caller_id.subject.clone();
    trail.groups = caller_id.groups.clone();
    trail.client = caller_id.client_id.clone();

    // 2. Which route, whose, and who serves it now. The owner is who claimed
    //    the route on this relay; the owner's policy is the one the serving
    //    agent brought in its hello (under the organisation's).
    let owner = match state.store.route_owner(&route).await {
        Ok(Some(owner)) => {
            trail.route_known = true;
            owner
        }
        Ok(None) => {
            trail.deny("unknown-route");
            let refusal = error(
                StatusCode::NOT_FOUND,
                "unknown_route",
                &format!("no route named '{route}' on this relay"),
            );
            return early_answer::after_body(req, refusal).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "route lookup failed");
            trail.deny("internal-error");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the relay's state store failed",
            );
        }
    };
    // 2a. Rate limits: per identity, then per route.
    if let Err(limited) = state.limits.check(&route, &caller_id.subject) {
        trail.deny(&format!("rate-limit-{}", limited.what));
        let mut resp = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            &format!(
                "too many requests for this {} (limit {}); retry in {} s",
                limited.what,
                limited.rate,
                limited.retry_after_secs()
            ),
        );
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(limited.retry_after_secs()),
        );
        return early_answer::after_body(req, resp).await;
    }
    // 2b. A request of an MCP session goes to the replica that holds it
    //     (see affinity.rs); any other to the next replica.
    let session_key = affinity::session_of(req.headers())
        .map(str::to_owned)
        .or_else(|| legacy_sse::upstream_session(state, req.uri(), &route, &caller_id.subject));
    let (picked, pinned) = match affinity::target(state, &route, session_key.as_deref()) {
        Target::Any => (pick_agent(state, &route), false),
        Target::Pinned(agent, served) => (Some((agent, served)), true),
        Target::Gone => {
            trail.deny("session-gone");
            legacy_sse::end_session_of(state, req.uri(), &route, &caller_id.subject);
            return early_answer::after_body(req, affinity::gone(&route)).await;
        }
    };
    let Some((agent, served)) = picked else {
        trail.deny("no-agent");
        return early_answer::after_body(req, no_agent(&route)).await;
    };
    // 2a'. An MCP route takes MCP only (its own URL; POST, GET, DELETE), and
    //      no route takes a dot segment (policy::route_path).
    if let Err(refusal) = route_path::admit(
        served.kind != UpstreamKind::PlainHttp,
        req.method().as_str(),
        &rest,
    ) {
        trail.deny(refusal.rule());
        return path_refused(&route, &refusal);
    }
    let caller = Caller {
        email: &caller_id.subject,
        groups: &caller_id.groups,
        client_id: &caller_id.client_id,
        client_name: None,
        route: &route,
        route_owner: &owner,
        time: SystemTime::now(),
    };
    // One engine decides the whole request, even if a reload swaps the
    // organisation's policy meanwhile.
    let route_policy = served.policy.clone();
    // 2b. Grants the owner made (agent share) add to the owner's policy; read
    //     on every request, so a revoked one ends access on the next.
    let (engine, grants) = match state
        .policies
        .with_live_grants(&state.store, &route, &route_policy)
        .await
    {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "grants lookup failed");
            trail.deny("internal-error");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the relay's state store failed",
            );
        }
    };

    // 2c. The legacy HTTP+SSE transport (2024-11-05): a stream to open (once
    //     the policy has allowed it, in 3), or a message POSTed to one (which
    //     then takes the path below).
    let mcp = served.kind != UpstreamKind::PlainHttp;
    let mut open_legacy = false;
    match legacy_sse::recognise(state, &req, &route, &rest, mcp, &caller_id) {
        Ok(Legacy::No) => {}
        Ok(Legacy::Open) => open_legacy = true,
        Ok(Legacy::Post(post)) => *legacy = Some(post),
        Err(resp) => {
            trail.deny("legacy-session");
            return *resp;
        }
    }

    // 3. What the body says: JSON-RPC messages are read whole (up to the
    //    cap), classified one by one (method, target, SQL facts) and audited.
    //    Anything else is decided as a whole.
    let (mut parts, body) = req.into_parts();
    if let Some(post) = legacy.as_ref() {
        legacy_sse::prepare(post, &mut parts);
    }
    if state.config.bench_disable_policy_and_audit {
        trail.skip();
    }
    // The body's tools/list requests, whose answers are filtered.
    let mut tools_list = None;
    // Whether sending the request twice changes nothing (a safe method, or
    // JSON-RPC messages that only read): only such a request goes to another
    // replica when its agent falls silent, as that agent may have run it.
    let mut only_reads = matches!(
        parts.method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    let (body, body_kind) = if served.kind != UpstreamKind::PlainHttp
        && is_json_post(&parts)
        && !state.config.bench_disable_policy_and_audit
    {
        let read = tokio::time::timeout(
            state.config.body_read_timeout,
            Limited::new(body, state.config.max_body).collect(),
        )
        .await;
        let Ok(read) = read else {
            trail.deny("body-timeout");
            return jsonrpc_error(
                StatusCode::REQUEST_TIMEOUT,
                &serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {
                "code": -32600,
                "message": format!(
                    "the request body did not arrive within {:?}",
                    state.config.body_read_timeout
                )}}),
            );
        };
        let bytes = match read {
            Ok(c) => c.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                trail.deny("body-too-large");
                return jsonrpc_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {
                        "code": -32600,
                        "message": format!("request body exceeds {} bytes", state.config.max_body)}}),
                );
            }
            Err(e) => {
                trail.deny("client-aborted");
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("could not read the request body: {e}"),
                );
            }
        };
        trail.bytes_in = bytes.len() as u64;
        let deciding = Instant::now();
        let messages = match jsonrpc::classify_body(&bytes) {
            Ok(m) => m,
            Err(e) => {
                trail.deny("malformed-jsonrpc");
                return jsonrpc_error(StatusCode::BAD_REQUEST, &e.to_jsonrpc_error(None));
            }
        };
        let facts: Vec<Option<SqlFacts>> = messages
            .iter()
            .map(|m| m.sql_argument().map(sql::classify))
            .collect();
        let method_header = parts
            .headers
            .get(jsonrpc::MCP_METHOD_HEADER)
            .and_then(|v| v.to_str().ok());
        let name_header = parts
            .headers
            .get(jsonrpc::MCP_NAME_HEADER)
            .and_then(|v| v.to_str().ok());
        if method_header.is_some() || name_header.is_some() {
            for m in &messages {
                if let Err(e) = jsonrpc::check_headers(method_header, name_header, m) {
                    trail.messages(state, &messages, &facts, &[]);
                    trail.deny("mcp-header-mismatch");
                    return jsonrpc_error(e.http_status(), &e.to_jsonrpc_error(m.id.as_ref()));
                }
            }
        }

        // 4. The policy decides each message: the organisation's policy and
        //    the route owner's, both of which must allow it.
        let evaluating = Instant::now();
        let mut decisions = engine.decide_body(caller, &messages, &facts);
        state.metrics.policy_evaluated(evaluating.elapsed());
        // A call to a tool that changed since it was pinned waits for the owner.
        pins::deny_changed_tools(&state.store, &route, &messages, &mut decisions).await;
        trail.timing.policy_us = Some(deciding.elapsed().as_micros() as u64);
        if decisions.iter().any(|d| !d.allowed) {
            trail.messages(state, &messages, &facts, &decisions);
            trail.deny("policy");
            let visible = |tool: &str| engine.tool_visible(&caller, tool);
            return denied(&messages, &decisions, &route, &visible);
        }
        // 4a. A token with only the read scope sends only what reads; the
        //     client is told which scope to ask for (step-up).
        if caller_id.access == Access::Read {
            let writing: Vec<usize> = messages
                .iter()
                .zip(&facts)
                .enumerate()
                .filter(|(_, (m, f))| !policy::reading::reads(m, f.as_ref()))
                .map(|(i, _)| i)
                .collect();
            if !writing.is_empty() {
                for &i in &writing {
                    decisions[i] = Decision {
                        allowed: false,
                        policies: vec![INSUFFICIENT_SCOPE.to_owned()],
                        errors: Vec::new(),
                    };
                }
                trail.messages(state, &messages, &facts, &decisions);
                trail.deny(INSUFFICIENT_SCOPE);
                let first = &messages[writing[0]];
                return insufficient_scope(state, &route, first.id.as_ref(), &describe(first));
            }
        }
        trail.messages(state, &messages, &facts, &decisions);
        only_reads = messages
            .iter()
            .zip(&facts)
            .all(|(m, f)| policy::reading::reads(m, f.as_ref()));
        tools_list = tool_filter::relay_watch(state, &messages, &engine, &caller, request_id);
        trail.allow("policy");
        let len = bytes.len() as u64;
        (
            forward::Upload::Whole(bytes),
            if len == 0 {
                BodyKind::Empty
            } else {
                BodyKind::Length(len)
            },
        )
    } else {
        let bench = state.config.bench_disable_policy_and_audit;
        if served.kind != UpstreamKind::PlainHttp && parts.method == http::Method::POST && !bench {
            // An MCP route's POSTs are JSON-RPC: anything else would reach
            // the local server without the policy having read it.
            trail.deny("not-json");
            return jsonrpc_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {
                    "code": -32600,
                    "message": "MCP messages must be POSTed with Content-Type: application/json"}}),
            );
        }
        // No JSON-RPC message to judge (an MCP GET stream or DELETE, or a
        // plain HTTP route): the caller needs what every MCP session needs.
        if !bench {
            let deciding = Instant::now();
            let decision = engine.decide(&PolicyRequest {
                caller,
                message: &policy::body::session_plumbing(),
                sql: None,
            });
            state.metrics.policy_evaluated(deciding.elapsed());
            if !decision.allowed {
                trail.deny(&decision.policies.join(","));
                return error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    &format!("route '{route}': {}", decision.message()),
                );
            }
            // A read-only token may open and end MCP sessions, and only
            // read a plain HTTP route.
            let reading = served.kind != UpstreamKind::PlainHttp
                || matches!(
                    parts.method,
                    http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
                );
            if !reading && rests_on_read_only_grants(&decision, &grants) {
                let refusal = route_path::PathRefusal::ReadOnly(parts.method.to_string());
                trail.deny(refusal.rule());
                return path_refused(&route, &refusal);
            }
            if caller_id.access == Access::Read && !reading {
                trail.deny(INSUFFICIENT_SCOPE);
                return insufficient_scope(
                    state,
                    &route,
                    None,
                    &format!("{} on a plain HTTP route", parts.method),
                );
            }
            trail.allow(&decision.policies.join(","));
        }
        let kind = if body.is_end_stream() {
            BodyKind::Empty
        } else {
            match body.size_hint().exact() {
                Some(n) => BodyKind::Length(n),
                None => BodyKind::Streaming,
            }
        };
        if let BodyKind::Length(n) = kind {
            trail.bytes_in = n;
        }
        match kind {
            // Nothing, or a small body of known length, is held whole: the
            // exchange can then go to another replica if its agent turns out
            // to be gone (see step 6).
            BodyKind::Empty => (forward::Upload::Whole(Bytes::new()), kind),
            BodyKind::Length(n) if n <= forward::RESENDABLE => {
                match tokio::time::timeout(state.config.body_read_timeout, body.collect()).await {
                    Ok(Ok(read)) => (forward::Upload::Whole(read.to_bytes()), kind),
                    Ok(Err(e)) => {
                        trail.deny("client-aborted");
                        return error(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            &format!("could not read the request body: {e}"),
                        );
                    }
                    Err(_) => {
                        trail.deny("body-timeout");
                        return error(
                            StatusCode::REQUEST_TIMEOUT,
                            "body_timeout",
                            &format!(
                                "the request body did not arrive within {:?}",
                                state.config.body_read_timeout
                            ),
                        );
                    }
                }
            }
            _ => (
                forward::Upload::Streamed(body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()),
                kind,
            ),
        }
    };

    // 4b. A legacy stream is held by the relay itself.
    if open_legacy {
        return legacy_sse::open(state, &route, &caller_id, peer);
    }

    // 5. The exchange head.
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
    let mut head = ExchangeHead {
        route: route.clone(),
        method: parts.method.as_str().to_owned(),
        path: format!(
            "{}{query}",
            if rest.is_empty() { "/" } else { rest.as_str() }
        ),
        headers: headers::to_tunnel(&parts.headers, host.as_deref(), peer),
        identity: Identity {
            subject: caller_id.subject.clone(),
            kind: caller_id.kind,
            credential_name: caller_id.client_id.clone(),
            groups: caller_id.groups.clone(),
        },
        request_id: request_id.to_owned(),
        session: parts
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body_kind,
        grants,
    };
    if tools_list.is_some() {
        // A tools/list answer is read by the relay: not compressed.
        head.headers
            .retain(|h| !h.name.eq_ignore_ascii_case("accept-encoding"));
    }

    // 6. Forward, and stream the answer back. A tunnel that died since the
    //    last keep-alive (no stream opens) is skipped for another replica, if
    //    one decides with the same policy, the request being whole; a pinned
    //    session's replica is not replaced (its session is gone). An agent
    //    that falls silent (forward::PEER_GONE_AFTER) is picked last until it
    //    is heard from again, and a request that only reads goes elsewhere.
    let request_session = head.session.clone();
    let resend = match &body {
        forward::Upload::Whole(b) if only_reads => Some(b.clone()),
        _ => None,
    };
    // Sent again only with a whole body that only reads: otherwise the one
    // copy is moved into the exchange.
    let mut body = Some(body);
    let mut head = Some(head);
    let mut agent = agent;
    let mut attempts = 0;
    let sent = Instant::now();
    let answer = loop {
        let give_up = resend.is_some() && state.registry.has_other_replica(&route, agent.id);
        let failure = match forward::open(&agent, give_up).await {
            Ok(stream) => {
                let upload = match (body.take(), &resend) {
                    (Some(b), _) => Some(b),
                    (None, Some(b)) => Some(forward::Upload::Whole(b.clone())),
                    (None, None) => None,
                };
                let this_head = if resend.is_some() {
                    head.clone()
                } else {
                    head.take()
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
        if pinned {
            if state.registry.pick(&route).is_some() {
                if let Some(s) = &request_session {
                    state.affinity.forget(&route, s);
                }
                trail.deny("session-gone");
                return affinity::gone(&route);
            }
            return no_agent(&route);
        }
        let next = pick_agent(state, &route).filter(|(_, s)| Arc::ptr_eq(&s.policy, &route_policy));
        match next {
            Some((a, _)) if attempts < 3 => agent = a,
            _ => return no_agent(&route),
        }
    };
    trail.timing.agent_us = Some(sent.elapsed().as_micros() as u64);
    forward::disconnect_on_violation(&agent, &answer);
    if let Some(watch) = tools_list.as_mut() {
        watch.accept_tool_changes(agent.served(&route).is_some_and(|s| s.accept_tool_changes));
    }
    match answer {
        Ok(resp) => {
            affinity::observe(
                state,
                &route,
                &agent,
                &parts.method,
                request_session.as_deref(),
                resp.status(),
                resp.headers(),
            );
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
            resp
        }
        Err(e) => {
            tracing::warn!(request_id, route, session = agent.id, error = %e, "exchange failed");
            let code = match e {
                forward::ForwardError::Timeout(_) => "agent_timeout",
                forward::ForwardError::Open(_) | forward::ForwardError::PeerGone(_) => {
                    "agent_unavailable"
                }
                forward::ForwardError::NoAnswer(_) | forward::ForwardError::Violation(_) => {
                    "agent_error"
                }
            };
            error(e.status(), code, &format!("route '{route}': {e}"))
        }
    }
}

/// The answer to a request refused for its method or path.
fn path_refused(route: &str, refusal: &route_path::PathRefusal) -> Response<RespBody> {
    let mut resp = error(
        refusal.status(),
        refusal.code(),
        &format!("route '{route}': {refusal}"),
    );
    if let route_path::PathRefusal::McpMethod(_) = refusal {
        resp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static(route_path::MCP_METHODS),
        );
    }
    resp
}

/// Whether an allowed decision rests only on read-only `grants`.
fn rests_on_read_only_grants(decision: &Decision, grants: &[protocol::RouteGrant]) -> bool {
    let read_only: Vec<&str> = grants
        .iter()
        .filter(|g| g.read_only)
        .map(|g| g.id.as_str())
        .collect();
    !read_only.is_empty() && route_path::rests_on_read_only_grants(decision, &read_only)
}

/// A live replica serving `route`, and how it serves it.
fn pick_agent(state: &SharedState, route: &str) -> Option<(Arc<AgentSession>, ServedRoute)> {
    let agent = state.registry.pick(route)?;
    let served = agent.served(route)?.clone();
    Some((agent, served))
}

/// The answer to a body the policy refused: a JSON-RPC error for each request
/// (HTTP 200, as JSON-RPC errors are), naming the policy that decided (or
/// "unknown tool" for a tool the caller cannot see, see
/// [`tool_filter::refusal`]); 202 when the body held only notifications or
/// responses.
fn denied(
    messages: &[jsonrpc::Message],
    decisions: &[Decision],
    route: &str,
    visible: &dyn Fn(&str) -> bool,
) -> Response<RespBody> {
    match tool_filter::refusals(messages, decisions, route, visible) {
        Some(errors) => jsonrpc_error(StatusCode::OK, &errors),
        None => {
            let mut resp = Response::new(full(Bytes::new()));
            *resp.status_mut() = StatusCode::ACCEPTED;
            resp
        }
    }
}

/// A POST whose body is JSON: an MCP client's JSON-RPC message(s).
fn is_json_post(parts: &http::request::Parts) -> bool {
    parts.method == http::Method::POST && is_json(&parts.headers)
}

fn jsonrpc_error(status: StatusCode, body: &serde_json::Value) -> Response<RespBody> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn no_agent(route: &str) -> Response<RespBody> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "agent_unavailable",
        &format!("no agent is connected for route '{route}'"),
    )
}

/// Splits `/mcp/<route>/<rest>` into the route and `/<rest>`.
fn split_route(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix("/mcp/")?;
    match after.find('/') {
        Some(i) => Some((&after[..i], &after[i..])),
        None => Some((after, "")),
    }
}

/// Checks the bearer token: a client token, or an OAuth access token issued
/// for exactly this route. The error is the 401 to send.
async fn authenticate(
    state: &SharedState,
    headers: &http::HeaderMap,
    route: &str,
) -> Result<Authenticated, Box<Response<RespBody>>> {
    let refuse = |code: &str, text: &str| Box::new(unauthorized(state, route, Some((code, text))));
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Box::new(unauthorized(state, route, None)));
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or_else(|| {
            refuse(
                "invalid_request",
                "the Authorization header must be 'Bearer <token>'",
            )
        })?;
    if presented.starts_with(oauth_store::ACCESS_PREFIX) {
        let record = state
            .store
            .verify_access(presented)
            .await
            .map_err(|rejection| refuse("invalid_token", &rejection.to_string()))?;
        // The token's audience is one route (RFC 8707): never another.
        if record.resource != state.route_url(route) {
            return Err(refuse(
                "invalid_token",
                "the token was issued for another resource",
            ));
        }
        let groups = state.store.groups(&record.email).await.map_err(|e| {
            tracing::error!(error = %e, "groups lookup failed");
            Box::new(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the relay's state store failed",
            ))
        })?;
        let Some(access) = scope::access(&record.scope) else {
            return Err(refuse(
                "invalid_token",
                "the token holds no scope of this relay",
            ));
        };
        return Ok(Authenticated {
            subject: record.email,
            client_id: record.client_id,
            kind: IdentityKind::OAuth,
            // As the tunnel carries them (the agent decides on the same).
            groups: protocol::bounded_groups(groups),
            access,
        });
    }
    let record = state
        .store
        .verify(presented)
        .await
        .map_err(|rejection| refuse("invalid_token", &rejection.to_string()))?;
    if record.kind != TokenKind::Client {
        return Err(refuse(
            "invalid_token",
            "an agent token cannot call routes; create a client token with `relay token create --client`",
        ));
    }
    Ok(Authenticated {
        subject: record.owner,
        client_id: record.name,
        kind: IdentityKind::ClientToken,
        groups: Vec::new(),
        access: Access::Full,
    })
}

/// A 401 whose challenge points at the route's protected-resource metadata
/// (RFC 9728), with the error when a token was presented (RFC 6750).
fn unauthorized(
    state: &SharedState,
    route: &str,
    error_code: Option<(&str, &str)>,
) -> Response<RespBody> {
    let (code, description) =
        error_code.unwrap_or(("unauthorized", "this route needs a bearer token"));
    let mut resp = error(StatusCode::UNAUTHORIZED, code, description);
    let challenge = oauth::metadata::challenge(state, route, error_code);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// The audit rule of a request refused for its token's scope.
pub const INSUFFICIENT_SCOPE: &str = "insufficient-scope";

/// What a writing message is, for the refusal's text.
fn describe(m: &jsonrpc::Message) -> String {
    let method = m.method.as_deref().unwrap_or("a response");
    match &m.target {
        Some(t) => format!("{method} {t}"),
        None => method.to_owned(),
    }
}

/// The 403 of a token whose scope (`mcp:read`) does not cover `what`: the
/// challenge names the scope to ask for (`mcp`, RFC 6750 §3.1), and the body
/// is a JSON-RPC error answering request `id`.
fn insufficient_scope(
    state: &SharedState,
    route: &str,
    id: Option<&serde_json::Value>,
    what: &str,
) -> Response<RespBody> {
    let message = format!(
        "route '{route}': the token's scope ({}) allows only reading; {what} needs scope '{}'",
        scope::READ,
        scope::FULL
    );
    let mut resp = jsonrpc_error(
        StatusCode::FORBIDDEN,
        &serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {
            "code": INSUFFICIENT_SCOPE_CODE,
            "message": message,
            "data": {"error": "insufficient_scope", "scope": scope::FULL}}}),
    );
    let challenge = oauth::metadata::step_up_challenge(state, route, scope::FULL, &message);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// The JSON-RPC error code of a message refused for the token's scope.
pub const INSUFFICIENT_SCOPE_CODE: i64 = -32003;

fn text(status: StatusCode, body: &'static str) -> Response<RespBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::split_route;

    #[test]
    fn routes_are_split_from_their_paths() {
        assert_eq!(split_route("/mcp/demo"), Some(("demo", "")));
        assert_eq!(split_route("/mcp/demo/"), Some(("demo", "/")));
        assert_eq!(split_route("/mcp/demo/a/b"), Some(("demo", "/a/b")));
        assert_eq!(split_route("/mcp/"), Some(("", "")));
        assert_eq!(split_route("/other"), None);
    }
}
