//! Phase 2: which route, whose, and who serves it now. The owner is who
//! claimed the route on this relay; the owner's policy is the one the
//! serving agent brought in its hello (under the organisation's), with the
//! grants the owner made (`agent share`).

use std::sync::Arc;
use std::time::SystemTime;

use http::request::Parts;
use http::{Response, StatusCode};
use policy::route_path;
use policy::{Caller, Engine};
use protocol::{RouteGrant, UpstreamKind};

use super::{Ask, Refusal};
use crate::agents::registry::{AgentSession, ServedRoute};
use crate::gateway::authenticated::Authenticated;
use crate::gateway::legacy_sse::{self, Legacy, LegacyPost};
use crate::http::body::RespBody;
use crate::http::response::error;
use crate::sessions::affinity::{self, Target};
use crate::state::SharedState;
use crate::store::proof::Proof;

/// A route's request, routed: to whom it goes and what decides it.
pub struct Routed {
    /// Who claimed the route on this relay.
    pub owner: String,
    /// The replica picked, and how it serves the route.
    pub agent: Arc<AgentSession>,
    pub served: ServedRoute,
    /// The replica holds the request's MCP session: no other may take it.
    pub pinned: bool,
    /// One engine decides the whole request, even if a reload swaps the
    /// organisation's policy meanwhile: the owner's policy with the live
    /// grants added.
    pub engine: Arc<Engine>,
    /// Those grants, as the agent is told them.
    pub grants: Vec<RouteGrant>,
    /// A legacy HTTP+SSE stream to open (once the policy has allowed it).
    pub open_legacy: bool,
    /// The request's freshness proof, for the lookups after routing (pins).
    pub proof: Proof,
}

impl Routed {
    /// Whether the route serves MCP (not plain HTTP).
    pub fn mcp(&self) -> bool {
        self.served.kind != UpstreamKind::PlainHttp
    }

    /// Who asks, as the policy sees it.
    pub fn caller<'a>(&'a self, who: &'a Authenticated, route: &'a str) -> Caller<'a> {
        Caller {
            email: &who.subject,
            groups: &who.groups,
            client_id: &who.client_id,
            client_name: None,
            route,
            route_owner: &self.owner,
            time: SystemTime::now(),
        }
    }
}

/// Splits `/mcp/<route>/<rest>` into a valid route name and `/<rest>`; the
/// error is the 404 to send (not audited: no route was named).
pub fn locate(path: &str) -> Result<(&str, &str), Box<Response<RespBody>>> {
    let Some((route, rest)) = split_route(path) else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such path on this relay; routes live under /mcp/<route>",
        )));
    };
    if protocol::validate_route_name(route).is_err() {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "unknown_route",
            &format!("no route named {route:?} on this relay"),
        )));
    }
    Ok((route, rest))
}

/// Splits `/mcp/<route>/<rest>` into the route and `/<rest>`.
fn split_route(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix("/mcp/")?;
    match after.find('/') {
        Some(i) => Some((&after[..i], &after[i..])),
        None => Some((after, "")),
    }
}

/// Who claimed `route` on this relay.
pub async fn owner(state: &SharedState, route: &str, proof: Proof) -> Result<String, Refusal> {
    match state.store.route_owner_proven(route, proof).await {
        Ok(Some(owner)) => Ok(owner),
        Ok(None) => Err(Refusal::UnknownRoute),
        Err(e) => {
            tracing::error!(error = %e, "route lookup failed");
            Err(store_failed(state))
        }
    }
}

/// A lookup of the route failed: 503 on a database on the network, 500 on
/// SQLite (as always).
fn store_failed(state: &SharedState) -> Refusal {
    if state.store.is_remote() {
        Refusal::StoreUnavailable
    } else {
        Refusal::StoreFailed
    }
}

/// Rate limits, the replica, the method and path, the policy with its
/// grants, and the legacy HTTP+SSE transport: a message POSTed to a legacy
/// session (`legacy`) takes the path of any other, with the session's
/// headers.
pub async fn route(
    state: &SharedState,
    parts: &mut Parts,
    ask: &Ask<'_>,
    who: &Authenticated,
    owner: String,
    legacy: &mut Option<LegacyPost>,
    proof: Proof,
) -> Result<Routed, Refusal> {
    let (route, rest) = (ask.route, ask.rest);
    // 2a. Rate limits: per identity, then per route.
    if let Err(limited) = state.limits.check(route, &who.subject) {
        return Err(Refusal::RateLimited(limited));
    }
    // 2b. A request of an MCP session goes to the replica that holds it
    //     (see affinity.rs); any other to the next replica.
    let session_key = affinity::session_of(&parts.headers)
        .map(str::to_owned)
        .or_else(|| legacy_sse::upstream_session(state, &parts.uri, route, &who.subject));
    let (picked, pinned) =
        match state
            .affinity
            .target(&state.registry, route, session_key.as_deref())
        {
            Target::Any => (pick_agent(state, route), false),
            Target::Pinned(agent, served) => (Some((agent, served)), true),
            Target::Gone => {
                legacy_sse::end_session_of(state, &parts.uri, route, &who.subject);
                return Err(Refusal::SessionGone);
            }
        };
    let Some((agent, served)) = picked else {
        return Err(Refusal::NoAgent);
    };
    // 2c. An MCP route takes MCP only (its own URL; POST, GET, DELETE), and
    //     no route takes a dot segment (policy::route_path).
    let mcp = served.kind != UpstreamKind::PlainHttp;
    route_path::admit(mcp, parts.method.as_str(), rest).map_err(Refusal::Path)?;
    let route_policy = served.policy.clone();
    // 2d. Grants the owner made (agent share) add to the owner's policy; read
    //     on every request, so a revoked one ends access on the next.
    let (engine, grants) = match state
        .policies
        .with_live_grants(&state.store, route, &route_policy, proof)
        .await
    {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "grants lookup failed");
            return Err(store_failed(state));
        }
    };
    // 2e. The legacy HTTP+SSE transport (2024-11-05): a stream to open, or a
    //     message POSTed to one.
    let mut open_legacy = false;
    match legacy_sse::recognise(state, parts, route, rest, mcp, who) {
        Ok(Legacy::No) => {}
        Ok(Legacy::Open) => open_legacy = true,
        Ok(Legacy::Post(post)) => {
            legacy_sse::prepare(&post, parts);
            *legacy = Some(post);
        }
        Err(refusal) => return Err(Refusal::Legacy(refusal)),
    }
    Ok(Routed {
        owner,
        agent,
        served,
        pinned,
        engine,
        grants,
        open_legacy,
        proof,
    })
}

/// A live replica serving `route`, and how it serves it.
pub fn pick_agent(state: &SharedState, route: &str) -> Option<(Arc<AgentSession>, ServedRoute)> {
    let agent = state.registry.pick(route)?;
    let served = agent.served(route)?.clone();
    Some((agent, served))
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
