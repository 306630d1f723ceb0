//! This node of the cluster: its id and addresses, its secret, and the live
//! nodes' agent addresses (what its agents are told). Its heartbeat is
//! [`crate::server::membership`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::secret::ClusterSecret;

/// How often a node heartbeats (and reads the live nodes): also how soon
/// the other nodes learn of one that starts or leaves, and tell their
/// agents to dial or leave it. Two small queries per node per beat.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// A node not heard from for this long is not live: its agents' sessions
/// are ignored, and agents are no longer told to dial it.
pub const STALE_AFTER: Duration = Duration::from_secs(3);

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
    /// The kept connections to peers (made on first use).
    pub(crate) peer_pool: std::sync::OnceLock<crate::cluster::peer_pool::PeerPool>,
    /// Which node holds a route's agent, as recently read.
    pub holders: crate::cluster::holders::Holders,
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
            peer_pool: std::sync::OnceLock::new(),
            holders: Default::default(),
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

    /// Sets the live nodes' agent addresses; true if they changed.
    pub fn set_live(&self, addresses: Vec<String>) -> bool {
        self.live.send_if_modified(|live| {
            if *live == addresses {
                return false;
            }
            *live = addresses;
            true
        })
    }

    /// The agent instance `instance` as the store keeps it.
    pub fn instance(instance: &[u8; 16]) -> String {
        hex::encode(instance)
    }
}

fn random_id() -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut id = [0u8; 8];
    let _ = SystemRandom::new().fill(&mut id);
    hex::encode(id)
}
