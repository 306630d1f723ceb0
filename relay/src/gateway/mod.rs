//! The relay's public HTTPS front: `/mcp/<route>` → authenticate → route →
//! classify → decide → forward, and the audit of it all.
//!
//! Read top to bottom, [`handle`] and [`serve`] are the whole request path:
//! each phase is a file of its own, named after it. A phase that refuses
//! returns a [`Refusal`]; [`refusal`] answers and audits every refusal in one
//! place, so none can forget its audit event.
//!
//! With it, what the request path uses: who is calling ([`authenticated`]),
//! one request's audit events ([`trail`]), list answers filtered per caller
//! ([`tool_filter`]) and tool pinning ([`pins`]), the legacy HTTP+SSE
//! transport ([`legacy_sse`]), and the grants API that
//! `agent share` calls ([`grants_api`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Instant;

use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::gateway::trail::Trail;
use crate::http::body::RespBody;
use crate::http::cors;
use crate::http::response::text;
use crate::oauth;
use crate::state::SharedState;
use crate::store::token;
use legacy_sse::LegacyPost;

mod across_nodes;
mod audit;
mod authenticate;
pub mod authenticated;
mod classify;
mod decide;
mod forward;
mod forward_to_node;
pub mod grants_api;
pub mod legacy_sse;
pub mod pins;
mod refusal;
mod route;
mod session_holders;
pub mod tool_filter;
pub mod trail;

pub use refusal::Refusal;

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

/// What the phases know of the request besides its head and body.
struct Ask<'a> {
    peer: SocketAddr,
    /// The route named in the path, and the path below it.
    route: &'a str,
    rest: &'a str,
    request_id: &'a str,
}

/// The relay's own endpoints, or a route's request through [`serve`]; a
/// refusal is answered (and audited) here, once.
async fn route_request(
    state: &SharedState,
    peer: SocketAddr,
    mut req: Request<Incoming>,
    request_id: &str,
    trail: &mut Trail,
    legacy: &mut Option<LegacyPost>,
) -> Response<RespBody> {
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        trail.skip();
        return text(StatusCode::OK, "ok\n");
    }
    if oauth::serves(&path) {
        trail.skip();
        return oauth::handle(state, peer, req).await;
    }
    if grants_api::serves(&path) {
        trail.skip();
        return grants_api::handle(state, req).await;
    }
    let (route, rest) = match route::locate(&path) {
        Ok(found) => found,
        Err(not_found) => {
            // Not a route request: nothing to audit.
            trail.skip();
            return *not_found;
        }
    };
    trail.route = route.to_owned();
    // A node of a cluster: forwarded in, or forwarded on (see across_nodes).
    let mut peer = peer;
    if let Some(node) = &state.cluster {
        req = match across_nodes::pass(state, node, route, rest, req, &mut peer, trail).await {
            Ok(req) => req,
            Err(answered) => return answered,
        };
    }
    let ask = Ask {
        peer,
        route,
        rest,
        request_id,
    };
    let (mut parts, body) = req.into_parts();
    let mut body = Some(body);
    match serve(state, &ask, &mut parts, &mut body, trail, legacy).await {
        Ok(response) => response,
        Err(refusal) => refusal.answer(state, route, trail, parts, body).await,
    }
}

/// The phases of a route's request, in order. `body` is taken by the
/// classify phase; until then a refusal reads it first (see
/// [`Refusal::answer`]).
async fn serve(
    state: &SharedState,
    ask: &Ask<'_>,
    parts: &mut Parts,
    body: &mut Option<Incoming>,
    trail: &mut Trail,
    legacy: &mut Option<LegacyPost>,
) -> Result<Response<RespBody>, Refusal> {
    // 0. Nothing is served that cannot be audited, nor to a foreign Origin;
    //    a browser's preflight is answered without a token.
    authenticate::admit(state, parts)?;
    if cors::is_preflight(&parts.method) {
        trail.skip();
        return Ok(cors::preflight());
    }
    // One freshness proof for every lookup of the request (see
    // store/proof.rs): what changed before it arrived is seen.
    let proof = state.store.prove().await;
    // 1. Who is asking.
    let who = authenticate::authenticate(state, &parts.headers, ask.route, proof).await?;
    audit::identify(trail, &who);
    // 2. Which route, whose, and who serves it now.
    let owner = route::owner(state, ask.route, proof).await?;
    trail.route_known = true;
    let routed = route::route(state, parts, ask, &who, owner, legacy, proof).await?;
    let caller = routed.caller(&who, ask.route);
    // 3. What the body says.
    let body = classify::classify(state, parts, routed.mcp(), body.take(), trail).await?;
    // 4. The policy decides (and the audit records what it decided).
    let verdict = decide::judge(state, &caller, who.access, &routed, parts, &body).await;
    let allowed = audit::record(state, trail, &body, verdict)?;
    let watch = forward::watch(state, &body, &routed, &caller, ask.request_id);
    let upload = classify::upload(state, body, trail).await?;
    // 4b. A legacy stream is held by the relay itself.
    if routed.open_legacy {
        return Ok(legacy_sse::open(state, ask.route, &who, ask.peer));
    }
    // 5. Forward, and stream the answer back.
    let pass = forward::Pass {
        allowed,
        upload,
        watch,
    };
    forward::forward(state, ask, parts, routed, &who, pass, trail).await
}
