//! This relay's membership of a cluster: it registers as a node, heartbeats
//! and reads the live nodes (what its agents are told), records which
//! routes' agents it holds sessions to, and leaves on a clean drain.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::node::{Node, HEARTBEAT, STALE_AFTER};
use crate::state::SharedState;

/// Nodes not heard from for this long (killed, never drained) are removed.
const DEAD_NODES_KEPT: Duration = Duration::from_secs(3600);
/// MCP sessions' holders are forgotten this long after they were recorded.
const MCP_SESSIONS_KEPT: Duration = Duration::from_secs(24 * 3600);

/// Registers this node, then heartbeats and reads the live nodes every
/// [`HEARTBEAT`] until the relay shuts down (the shutdown removes it:
/// [`leave`]).
pub async fn run(state: SharedState, node: Arc<Node>) {
    let mut registered = false;
    let mut ticker = tokio::time::interval(HEARTBEAT);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = state.shutdown.cancelled() => return,
        }
        let beat = if registered {
            state.store.node_heartbeat(&node.id).await
        } else {
            Ok(false)
        };
        match beat {
            Ok(true) => {}
            Ok(false) => {
                match state
                    .store
                    .register_node(&node.id, &node.agent_address, &node.peer_address)
                    .await
                {
                    Ok(()) => {
                        if !registered {
                            tracing::info!(node = %node.id, agent_address = %node.agent_address, "registered as a node of the cluster");
                        }
                        registered = true;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot register this node");
                        continue;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "node heartbeat failed");
                continue;
            }
        }
        match state.store.live_nodes(STALE_AFTER.as_millis() as i64).await {
            Ok(nodes) => {
                state.metrics.live_nodes(nodes.len());
                let addresses: Vec<String> = nodes.into_iter().map(|n| n.agent_address).collect();
                if node.set_live(addresses.clone()) {
                    tracing::info!(nodes = ?addresses, "the cluster's live nodes changed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the live nodes"),
        }
        if pruned_at.elapsed() > Duration::from_secs(600) {
            pruned_at = tokio::time::Instant::now();
            let before = store::now_ms() - MCP_SESSIONS_KEPT.as_millis() as i64;
            if let Err(e) = state.store.prune_mcp_sessions(before).await {
                tracing::warn!(error = %e, "cannot prune MCP sessions' holders");
            }
            if let Err(e) = state
                .store
                .forget_dead_nodes(DEAD_NODES_KEPT.as_millis() as i64)
                .await
            {
                tracing::warn!(error = %e, "cannot forget dead nodes");
            }
        }
    }
}

/// A clean drain: this node leaves the cluster (its agents' sessions with it).
pub async fn leave(state: &SharedState, node: &Node) {
    match state.store.remove_node(&node.id).await {
        Ok(_) => tracing::info!(node = %node.id, "left the cluster"),
        Err(e) => tracing::warn!(error = %e, "cannot remove this node from the cluster"),
    }
}

/// Records that this node holds a session to `routes`' agent `instance`
/// (`held`), or no longer does.
pub async fn agent_session(
    state: &SharedState,
    node: &Node,
    routes: &[String],
    instance: &[u8; 16],
    held: bool,
) {
    let instance = Node::instance(instance);
    for route in routes {
        let done = if held {
            state
                .store
                .add_agent_session(route, &node.id, &instance)
                .await
        } else {
            state
                .store
                .remove_agent_session(route, &node.id, &instance)
                .await
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, route, "cannot record the agent's session in the cluster");
        }
    }
}

/// A relay on a shared database that is no node of the cluster (no
/// `--cluster-secret-file`): fine alone, but if nodes are live on the same
/// database, requests for their agents reaching this relay find no agent.
/// Says so once at start.
pub async fn warn_if_outside(state: SharedState) {
    let live = tokio::time::timeout(
        Duration::from_secs(5),
        state.store.live_nodes(STALE_AFTER.as_millis() as i64),
    )
    .await;
    if let Ok(Ok(nodes)) = live {
        if !nodes.is_empty() {
            tracing::warn!(
                live_nodes = nodes.len(),
                "{} live node(s) of a cluster share this database and this relay is not one of them: \
                 their agents are not served here; give --cluster-secret-file (and --node-address) to join",
                nodes.len()
            );
        }
    }
}
