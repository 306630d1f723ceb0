//! The relay nodes of a cluster (several relays on one database): each
//! registers itself with the address agents dial and the address peers
//! forward to, and heartbeats; a node is live while its latest heartbeat is
//! recent. What forwarding and session affinity need across nodes: which
//! node holds a session to which route's agent (rows of a node whose
//! heartbeat is stale are ignored), and which agent instance holds an MCP
//! session (so that any node can route a request of it).
//!
//! Times here are Unix milliseconds ([`crate::now_ms`]): heartbeats come
//! every second or so.

use crate::StoreError;

/// A registered relay node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Unique per running process (a new one at each start).
    pub id: String,
    /// `HOST:PORT` agents dial for this node (QUIC/TLS, the public name's
    /// certificate).
    pub agent_address: String,
    /// `HOST:PORT` peers forward requests to.
    pub peer_address: String,
    /// When it registered.
    pub started_at_ms: i64,
    /// Its latest heartbeat.
    pub heartbeat_at_ms: i64,
}

/// A node that holds a session to a route's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSession {
    pub route: String,
    /// The agent instance (one per running agent, whatever the number of
    /// nodes it holds sessions to).
    pub instance: String,
    pub node: Node,
}

/// Where an MCP (or legacy SSE) session lives: the agent instance that
/// created it, serving `route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionHolder {
    pub route: String,
    pub instance: String,
}

/// The nodes of a cluster, their agents' sessions and the MCP sessions'
/// holders.
#[async_trait::async_trait]
pub trait Nodes: Send + Sync {
    /// Registers (or registers again) a node, heard from now.
    async fn register_node(
        &self,
        id: &str,
        agent_address: &str,
        peer_address: &str,
    ) -> Result<(), StoreError>;

    /// The node is alive. False: it is not registered (it was removed, e.g.
    /// drained by mistake): register it again.
    async fn node_heartbeat(&self, id: &str) -> Result<bool, StoreError>;

    /// The nodes heard from within `stale_after_ms`, by id.
    async fn live_nodes(&self, stale_after_ms: i64) -> Result<Vec<Node>, StoreError>;

    /// Removes a node (a clean drain) and the agents' sessions it held.
    /// True if it was registered.
    async fn remove_node(&self, id: &str) -> Result<bool, StoreError>;

    /// Removes the nodes not heard from within `stale_after_ms` (killed,
    /// never drained) and their agents' sessions. Returns how many nodes.
    async fn forget_dead_nodes(&self, stale_after_ms: i64) -> Result<u64, StoreError>;

    /// Node `node` holds a session to `route`'s agent `instance`.
    async fn add_agent_session(
        &self,
        route: &str,
        node: &str,
        instance: &str,
    ) -> Result<(), StoreError>;

    /// That session ended.
    async fn remove_agent_session(
        &self,
        route: &str,
        node: &str,
        instance: &str,
    ) -> Result<(), StoreError>;

    /// The live nodes (heard from within `stale_after_ms`) that hold a
    /// session to `route`'s agents, by node id then instance.
    async fn agent_sessions(
        &self,
        route: &str,
        stale_after_ms: i64,
    ) -> Result<Vec<AgentSession>, StoreError>;

    /// Records that agent `instance` of `route` holds MCP session `id`.
    async fn add_mcp_session(
        &self,
        id: &str,
        route: &str,
        instance: &str,
    ) -> Result<(), StoreError>;

    /// Which agent instance holds MCP session `id`.
    async fn mcp_session(&self, id: &str) -> Result<Option<SessionHolder>, StoreError>;

    /// Forgets MCP session `id` (it ended).
    async fn remove_mcp_session(&self, id: &str) -> Result<(), StoreError>;

    /// Forgets the MCP sessions recorded before `before_ms` (their agents
    /// have forgotten them long ago). Returns how many.
    async fn prune_mcp_sessions(&self, before_ms: i64) -> Result<u64, StoreError>;
}
