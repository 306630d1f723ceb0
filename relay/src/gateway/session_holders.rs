//! Session affinity across the nodes of a cluster: an MCP session lives in
//! the agent instance that created it, and any node may get its next
//! request. The node that sees a session created records its instance in
//! the store; a node that gets a request of a session it does not know
//! looks it up there, and serves it through its own session to that
//! instance, or forwards it to a node that has one.

use http::{HeaderMap, Method, StatusCode};

use crate::agents::registry::AgentSession;
use crate::cluster::node::{Node, STALE_AFTER};
use crate::sessions::affinity;
use crate::state::SharedState;

/// Records what an agent's answer says of MCP sessions, for the other
/// nodes: a session created is recorded before the answer leaves (its next
/// request may reach another node at once); one deleted is forgotten (a 404
/// is not: it may come from a replica that never held the session).
pub async fn observed(
    state: &SharedState,
    route: &str,
    agent: &AgentSession,
    method: &Method,
    asked: Option<&str>,
    status: StatusCode,
    answer: &HeaderMap,
) {
    if let Some(id) = asked.filter(|_| *method == Method::DELETE && status.is_success()) {
        let (state, id) = (state.clone(), id.to_owned());
        tokio::spawn(async move {
            if let Err(e) = state.store.remove_mcp_session(&id).await {
                tracing::warn!(error = %e, "cannot forget an MCP session in the cluster");
            }
        });
        return;
    }
    let Some(created) = affinity::session_of(answer)
        .filter(|c| Some(*c) != asked && !c.is_empty() && c.len() <= affinity::MAX_ID_LEN)
    else {
        return;
    };
    let instance = Node::instance(&agent.instance_id);
    if let Err(e) = state.store.add_mcp_session(created, route, &instance).await {
        tracing::warn!(error = %e, "cannot record an MCP session in the cluster");
    }
}

/// For a request of MCP session `session` on `route` that this node does
/// not know: learns its instance from the store. `Some(peer)`: the
/// instance holds no session here, and the node at `peer` has one.
pub async fn recall(
    state: &SharedState,
    node: &Node,
    route: &str,
    session: &str,
) -> Option<String> {
    if state.affinity.instance(route, session).is_some() {
        return None;
    }
    let holder = match state.store.mcp_session(session).await {
        Ok(Some(h)) if h.route == route => h,
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read which agent holds an MCP session");
            return None;
        }
    };
    let mut instance = [0u8; 16];
    hex::decode_to_slice(&holder.instance, &mut instance).ok()?;
    state.affinity.learn(route, session, instance);
    if state.registry.pick_instance(route, instance).is_some() {
        return None;
    }
    match state
        .store
        .agent_sessions(route, STALE_AFTER.as_millis() as i64)
        .await
    {
        Ok(sessions) => sessions
            .into_iter()
            .find(|s| s.node.id != node.id && s.instance == holder.instance)
            .map(|s| s.node.peer_address),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read which node holds the session's agent");
            None
        }
    }
}
