//! Several relay nodes on one database (a cluster): each node registers
//! itself and heartbeats ([`node`]), tells its agents the live nodes so that
//! they hold a session to each (protocol 6, [`protocol::Control::Nodes`]),
//! and records which routes' agents it holds sessions to. A relay joins a
//! cluster when it is given a cluster secret (`--cluster-secret-file`); a
//! relay without one is alone, as always.

pub mod forward;
pub mod node;
pub mod secret;
pub mod sessions;
