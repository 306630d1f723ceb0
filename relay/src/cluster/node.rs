//! This node of the cluster: its id and addresses, its heartbeat, and the
//! live nodes' agent addresses (what its agents are told).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::secret::ClusterSecret;
use crate::state::SharedState;

/// How often a node heartbeats (and reads the live nodes).
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard from for this long is not live: its agents' sessions
/// are ignored, and agents are no longer told to dial it.
pub const STALE_AFTER: Duration = Duration::from_secs(3);
/// Nodes not heard from for this long (killed, never drained) are removed.
const DEAD_NODES_KEPT: Duration = Duration::from_secs(3600);
/// MCP sessions' holders are forgotten this long after they were recorded.
const MCP_SESSIONS_KEPT: Duration = Duration::from_secs(24 * 3600);

/// This relay as a node of a cluster.
pub struct Node {
    /// Random per process.
    pub id: String,
    /// `HOST:PORT` agents dial for this node (`--node-address`).
    pub agent_address: String,
    /// `HOST:PORT` peers forward requests to.
    pub peer_address: String,
    /// The live nodes' agent addresses, by node id (this one's among them
    /// once registered).
    live: watch::Sender<Vec<String>>,
    /// What signs and checks requests forwarded between nodes.
    pub secret: ClusterSecret,
    /// The TLS client configuration to reach peers (made on first use).
    pub(crate) peer_tls: std::sync::OnceLock<Arc<rustls::ClientConfig>>,
}

impl Node {
    pub fn new(agent_address: String, peer_address: String, secret: ClusterSecret) -> Node {
        Node {
            id: random_id(),
            agent_address,
            peer_address,
            live: watch::channel(Vec::new()).0,
            secret,
            peer_tls: std::sync::OnceLock::new(),
        }
    }

    /// This relay as a node, if `config` gives it a cluster secret; the
    /// node's address is `--node-address`, else `local_addr`.
    pub fn from_config(
        config: &crate::config::RelayConfig,
        local_addr: std::net::SocketAddr,
    ) -> Result<Option<Node>, crate::RelayError> {
        let Some(path) = &config.cluster_secret_file else {
            if config.node_address.is_some() {
                return Err(crate::RelayError::Config(
                    "--node-address is for a node of a cluster: give --cluster-secret-file too"
                        .into(),
                ));
            }
            if config.database_url.is_some() {
                tracing::warn!(
                    "--database-url without --cluster-secret-file: this relay shares its state but is \
                     not a node of the cluster (its agents are not told the other nodes, and it neither \
                     forwards nor accepts forwarded requests)"
                );
            }
            return Ok(None);
        };
        let secret = ClusterSecret::load(path)?;
        let address = config.node_address.unwrap_or(local_addr);
        if address.ip().is_unspecified() {
            return Err(crate::RelayError::Config(format!(
                "this node listens on {local_addr}: give --node-address, the address agents and other nodes reach it at"
            )));
        }
        Ok(Some(Node::new(
            address.to_string(),
            address.to_string(),
            secret,
        )))
    }

    /// The live nodes' agent addresses, now and as they change.
    pub fn live(&self) -> watch::Receiver<Vec<String>> {
        self.live.subscribe()
    }

    /// The agent instance `instance` as the store keeps it.
    pub fn instance(instance: &[u8; 16]) -> String {
        hex::encode(instance)
    }
}

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
                let addresses: Vec<String> = nodes.into_iter().map(|n| n.agent_address).collect();
                node.live.send_if_modified(|live| {
                    if *live == addresses {
                        return false;
                    }
                    tracing::info!(nodes = ?addresses, "the cluster's live nodes changed");
                    *live = addresses;
                    true
                });
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

fn random_id() -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut id = [0u8; 8];
    let _ = SystemRandom::new().fill(&mut id);
    hex::encode(id)
}
