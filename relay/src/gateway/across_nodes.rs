//! The cluster's hop, before the phases: a request forwarded by another node
//! (signed with the cluster secret) is served here for its client and never
//! forwarded again; one for a route whose agent holds no session here goes,
//! once, to a node where it does (and is audited there); so does a message
//! POSTed to a legacy SSE session whose stream another node holds.

use std::net::SocketAddr;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::cluster::node::Node;
use crate::gateway::forward_to_node::{self, Holding, Inbound};
use crate::gateway::legacy_sse;
use crate::gateway::trail::Trail;
use crate::http::body::RespBody;
use crate::metrics::Forwarded;
use crate::state::SharedState;

/// `Err`: the answer (refused, or forwarded to another node); `Ok`: the
/// request is this node's to serve, for `peer` (the client's address when
/// another node forwarded it).
pub(super) async fn pass(
    state: &SharedState,
    node: &Node,
    route: &str,
    rest: &str,
    mut req: Request<Incoming>,
    peer: &mut SocketAddr,
    trail: &mut Trail,
) -> Result<Request<Incoming>, Response<RespBody>> {
    match forward_to_node::inbound(&node.secret, &req) {
        Inbound::Refused(why) => {
            trail.skip();
            state.metrics.forwarded(Forwarded::Refused);
            tracing::warn!(peer = %*peer, route, why, "refused a request that claims to be forwarded by a node");
            return Err(forward_to_node::refused(&why));
        }
        Inbound::Forwarded { client, by } => {
            state.metrics.forwarded(Forwarded::Received);
            tracing::debug!(%client, by, route, "a request forwarded by another node");
            *peer = client;
            req.headers_mut()
                .remove(crate::cluster::secret::SIGNATURE_HEADER);
            req.headers_mut().remove(forward_to_node::CLIENT_HEADER);
            // Its MCP session's instance, if this node does not know it
            // (never forwarded again, whatever the answer).
            if let Some(session) = crate::sessions::affinity::session_of(req.headers()) {
                let _ = crate::gateway::session_holders::recall(state, node, route, session).await;
            }
        }
        Inbound::Direct => {
            // A legacy SSE session's message: to the node holding its stream
            // (which checks that the caller opened it), if that node is live.
            if let Some(holder) =
                legacy_sse::holding_node(state, &node.id, req.method(), req.uri(), rest)
            {
                if let Some(holder) = forward_to_node::live_peer(state, &holder).await {
                    trail.skip();
                    tracing::info!(
                        route,
                        to = holder,
                        "forwarding a legacy SSE message to the node that holds its stream"
                    );
                    return Err(forward_to_node::forward(
                        state,
                        node,
                        &holder,
                        req,
                        *peer,
                        Holding::LegacyStream,
                    )
                    .await);
                }
            }
            // An MCP session this node does not know may live in an
            // agent instance that holds no session here.
            let elsewhere = match crate::sessions::affinity::session_of(req.headers()) {
                Some(session) => {
                    crate::gateway::session_holders::recall(state, node, route, session).await
                }
                None => None,
            };
            let holder = match elsewhere {
                Some(peer) => Some(peer),
                None if !state.registry.serves(route) => {
                    forward_to_node::holder(state, node, route).await
                }
                None => None,
            };
            if let Some(holder) = holder {
                // Audited by the node that serves it.
                trail.skip();
                tracing::info!(
                    route,
                    to = holder,
                    "forwarding to the node that holds the route's agent"
                );
                return Err(forward_to_node::forward(
                    state,
                    node,
                    &holder,
                    req,
                    *peer,
                    Holding::Agent,
                )
                .await);
            }
        }
    }
    Ok(req)
}
