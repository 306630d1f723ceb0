//! Which connected agent sessions serve which routes.
//!
//! A route may have several replicas (agents of the same owner); requests are
//! spread round-robin across those that are not draining.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use protocol::UpstreamKind;
use tokio::sync::Notify;
use tunnel::{Transport, TunnelConnection};

use crate::policies::RoutePolicy;

/// How a session serves one of its routes.
#[derive(Clone)]
pub struct ServedRoute {
    /// What kind of local server answers it.
    pub kind: UpstreamKind,
    /// The route owner's policy (as the agent sent it) under the
    /// organisation's: the relay's side of the decision. Its engine is
    /// replaced when the organisation's policy is reloaded.
    pub policy: Arc<RoutePolicy>,
    /// The owner approves changed tool definitions (`agent connect
    /// --accept-tool-changes`): those seen in this session's `tools/list`
    /// answers are pinned again instead of hidden.
    pub accept_tool_changes: bool,
}

/// One connected agent.
pub struct AgentSession {
    pub id: u64,
    pub owner: String,
    pub token_id: String,
    pub instance_id: [u8; 16],
    /// The tunnel protocol version of its hello.
    pub protocol_version: u16,
    /// Sorted.
    pub routes: Vec<String>,
    /// How each of `routes` is served, in the same order (a vector, not a
    /// map keyed by a second copy of each name: every idle agent holds it).
    served: Vec<ServedRoute>,
    pub conn: TunnelConnection,
    /// No new exchanges go to a draining session.
    draining: AtomicBool,
    /// Silent since: the count of datagrams received from the agent when an
    /// exchange found it silent ([`NOT_SUSPECT`]: it is not). While nothing
    /// more has arrived, other replicas are picked first; the first sign of
    /// life clears it (a laptop under load is slow to acknowledge, not gone).
    silent_at: AtomicU64,
    /// Told to end (credential revoked, or replaced by the same agent's new session).
    pub kill: Notify,
    kill_reason: std::sync::Mutex<Option<KillReason>>,
}

/// [`AgentSession::silent_at`] of a session nobody found silent.
const NOT_SUSPECT: u64 = u64::MAX;

/// Why the relay ends a session on its own initiative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    CredentialRevoked,
    Replaced,
}

impl AgentSession {
    pub fn new(
        id: u64,
        owner: String,
        token_id: String,
        instance_id: [u8; 16],
        protocol_version: u16,
        served: HashMap<String, ServedRoute>,
        conn: TunnelConnection,
    ) -> Self {
        let mut served: Vec<(String, ServedRoute)> = served.into_iter().collect();
        served.sort_by(|a, b| a.0.cmp(&b.0));
        let (routes, served) = served.into_iter().unzip();
        AgentSession {
            id,
            owner,
            token_id,
            instance_id,
            protocol_version,
            routes,
            served,
            conn,
            draining: AtomicBool::new(false),
            silent_at: AtomicU64::new(NOT_SUSPECT),
            kill: Notify::new(),
            kill_reason: std::sync::Mutex::new(None),
        }
    }

    /// How this session serves `route` (`None`: it does not).
    pub fn served(&self, route: &str) -> Option<&ServedRoute> {
        let at = self
            .routes
            .binary_search_by(|r| r.as_str().cmp(route))
            .ok()?;
        self.served.get(at)
    }

    pub fn transport(&self) -> Transport {
        self.conn.transport()
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks the session silent (see [`forward::PEER_GONE_AFTER`]): other
    /// replicas are picked first until the agent is heard from again.
    ///
    /// [`forward::PEER_GONE_AFTER`]: crate::agents::forward::PEER_GONE_AFTER
    pub fn mark_silent(&self) {
        if let Some(n) = self.conn.received_datagrams() {
            self.silent_at.store(n, Ordering::Release);
        }
    }

    /// Whether the session was found silent and nothing has arrived since.
    pub fn is_silent(&self) -> bool {
        let at = self.silent_at.load(Ordering::Acquire);
        if at == NOT_SUSPECT {
            return false;
        }
        if self.conn.received_datagrams() != Some(at) {
            self.silent_at.store(NOT_SUSPECT, Ordering::Release);
            return false;
        }
        true
    }

    /// Ends the session: it stops taking exchanges now and its control loop
    /// says goodbye to the agent.
    pub fn kill(&self, reason: KillReason) {
        self.set_draining();
        *self.kill_reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.kill.notify_one();
    }

    pub fn kill_reason(&self) -> Option<KillReason> {
        *self.kill_reason.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct RouteSlot {
    replicas: Vec<Arc<AgentSession>>,
    next: AtomicUsize,
}

/// The live routing table.
#[derive(Default)]
pub struct Registry {
    routes: RwLock<HashMap<String, RouteSlot>>,
    next_session: AtomicU64,
}

impl Registry {
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Adds a session as a replica of each of its routes. Earlier sessions of
    /// the same agent instance (a reconnect racing its own stale session) are
    /// returned so the caller can end them.
    pub fn register(&self, session: Arc<AgentSession>) -> Vec<Arc<AgentSession>> {
        let mut stale = Vec::new();
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        for name in &session.routes {
            let slot = routes.entry(name.clone()).or_default();
            slot.replicas.retain(|s| {
                let same_instance = s.instance_id == session.instance_id && s.id != session.id;
                if same_instance && !stale.iter().any(|x: &Arc<AgentSession>| x.id == s.id) {
                    stale.push(s.clone());
                }
                !same_instance
            });
            slot.replicas.push(session.clone());
        }
        stale
    }

    /// Removes a session from every route it serves.
    pub fn unregister(&self, session: &AgentSession) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        for name in &session.routes {
            if let Some(slot) = routes.get_mut(name) {
                slot.replicas.retain(|s| s.id != session.id);
                if slot.replicas.is_empty() {
                    routes.remove(name);
                }
            }
        }
    }

    /// Picks the next replica for a route (round-robin, skipping draining ones).
    pub fn pick(&self, route: &str) -> Option<Arc<AgentSession>> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let slot = routes.get(route)?;
        let n = slot.replicas.len();
        let start = slot.next.fetch_add(1, Ordering::Relaxed);
        let live = |s: &&Arc<AgentSession>| !s.is_draining() && !s.conn.is_closed();
        let ring = || (0..n).map(|i| &slot.replicas[(start + i) % n]);
        // A replica found silent only when no other is live.
        ring()
            .filter(live)
            .find(|s| !s.is_silent())
            .or_else(|| ring().find(live))
            .cloned()
    }

    /// The live replica of `route` that is agent instance `instance` (a
    /// reconnected agent keeps its instance id, and its MCP sessions).
    pub fn pick_instance(&self, route: &str, instance: [u8; 16]) -> Option<Arc<AgentSession>> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        routes
            .get(route)?
            .replicas
            .iter()
            .rev()
            .find(|s| s.instance_id == instance && !s.is_draining() && !s.conn.is_closed())
            .cloned()
    }

    /// Whether a live replica of `route` other than session `except` could
    /// take a request.
    pub fn has_other_replica(&self, route: &str, except: u64) -> bool {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        routes.get(route).is_some_and(|slot| {
            slot.replicas.iter().any(|s| {
                s.id != except && !s.is_draining() && !s.conn.is_closed() && !s.is_silent()
            })
        })
    }

    /// Whether some session serves `route` now.
    pub fn serves(&self, route: &str) -> bool {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        routes.contains_key(route)
    }

    /// Every live session (each once).
    pub fn sessions(&self) -> Vec<Arc<AgentSession>> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Arc<AgentSession>> = Vec::new();
        for slot in routes.values() {
            for s in &slot.replicas {
                if !out.iter().any(|x| x.id == s.id) {
                    out.push(s.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::compat::TokioAsyncReadCompatExt;
    use tunnel::mux::{MuxConnection, Side};

    use super::*;
    use crate::policies::Policies;

    /// Each route of a session finds how it is served, whatever the order
    /// the agent offered them in; a route it does not serve finds nothing.
    #[tokio::test]
    async fn each_route_finds_how_it_is_served() {
        let policies = Policies::load(None).expect("policies");
        let (io, _peer) = tokio::io::duplex(1024);
        let conn = TunnelConnection::Mux {
            conn: MuxConnection::start(io.compat(), Side::Server),
            remote: "127.0.0.1:1".parse().expect("addr"),
        };
        let offered = [
            ("zeta", UpstreamKind::Http, false),
            ("alpha", UpstreamKind::Stdio, true),
            ("mid", UpstreamKind::Sqlite, false),
        ];
        let served = offered
            .iter()
            .map(|&(name, kind, accept_tool_changes)| {
                let policy = policies.for_route(name, None).expect("policy");
                let route = ServedRoute {
                    kind,
                    policy,
                    accept_tool_changes,
                };
                (name.to_owned(), route)
            })
            .collect();
        let session = AgentSession::new(1, "o".into(), "t".into(), [0; 16], 1, served, conn);
        assert_eq!(session.routes, ["alpha", "mid", "zeta"]);
        for (name, kind, accept_tool_changes) in offered {
            let route = session.served(name).expect(name);
            assert_eq!(route.kind, kind, "{name}");
            assert_eq!(route.accept_tool_changes, accept_tool_changes, "{name}");
        }
        assert!(session.served("beta").is_none());
        assert!(session.served("zz").is_none());
    }
}
