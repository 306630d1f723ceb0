//! Several relay nodes on one database (a cluster): each node registers
//! itself and heartbeats ([`node`]), tells its agents the live nodes so that
//! they hold a session to each (protocol 6, [`protocol::Control::Nodes`]),
//! and records which routes' agents it holds sessions to. A relay joins a
//! cluster when it is given a cluster secret (`--cluster-secret-file`); a
//! relay without one is alone, as always.
//!
//! This folder is the node's description and its secret; what uses the
//! running relay lives beside its callers: the heartbeat and the agents'
//! sessions in [`crate::server::membership`], forwarding and MCP sessions'
//! holders in the gateway (`gateway/forward_to_node.rs`,
//! `gateway/session_holders.rs`).

pub mod holders;
pub mod node;
pub mod peer_pool;
pub mod secret;
