//! Session affinity: an MCP session lives in the replica that created it.
//!
//! A route may be served by several agents of its owner (replicas). A
//! stateful MCP server answers `initialize` with an `Mcp-Session-Id`, and
//! only that server knows the session: every later request carrying the id
//! (and the messages POSTed to a legacy SSE session, which carry the upstream
//! id the relay learned) must reach the same agent. The relay learns the id
//! from the answer's header and pins it to the agent *instance* (not the
//! tunnel session: an agent that reconnects, say after a network change, keeps
//! its MCP sessions).
//!
//! A request whose session's replica is gone while the route has other
//! replicas gets 404, which tells an MCP client to start a new session
//! (Streamable HTTP: "the client MUST start a new session"). When no replica
//! at all is connected the answer stays the usual 503 (the agent may be on its
//! way back). An id the relay never saw (say, from before a relay restart)
//! goes to any replica, whose server answers for itself.
//!
//! The table is bounded ([`MAX_PINNED`] ids; the oldest are forgotten first)
//! and an id is forgotten when its session is deleted or its server no longer
//! knows it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use http::{HeaderMap, Method, StatusCode};

use crate::agents::registry::{AgentSession, Registry, ServedRoute};

/// The most session ids remembered; past it the oldest are forgotten.
pub const MAX_PINNED: usize = 100_000;
/// Longer ids are not remembered (the SDKs use UUIDs or 32 hex digits).
pub const MAX_ID_LEN: usize = 256;
/// The header an MCP session id travels in.
pub const SESSION_HEADER: &str = "mcp-session-id";

/// Which agent instance holds each MCP session id, per route.
#[derive(Default)]
pub struct Affinity {
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    pins: HashMap<(String, String), [u8; 16]>,
    /// Insertion order, for forgetting the oldest (may hold ids forgotten
    /// since; compacted when it grows past twice the table).
    order: VecDeque<(String, String)>,
}

/// Where a request must go.
pub enum Target {
    /// Anywhere (no session, or one the relay does not know).
    Any,
    /// To this replica, which holds the request's session.
    Pinned(Arc<AgentSession>, ServedRoute),
    /// The session's replica is gone while others serve the route.
    Gone,
}

impl Affinity {
    /// Pins `session` on `route` to an agent instance.
    pub fn learn(&self, route: &str, session: &str, instance: [u8; 16]) {
        if session.is_empty() || session.len() > MAX_ID_LEN {
            return;
        }
        let key = (route.to_owned(), session.to_owned());
        let mut t = self.lock();
        if t.pins.insert(key.clone(), instance).is_some() {
            return;
        }
        t.order.push_back(key);
        while t.pins.len() > MAX_PINNED {
            let Some(oldest) = t.order.pop_front() else {
                break;
            };
            t.pins.remove(&oldest);
        }
        if t.order.len() > 2 * t.pins.len() + 1024 {
            let Table { pins, order } = &mut *t;
            order.retain(|k| pins.contains_key(k));
        }
    }

    /// Forgets a session.
    pub fn forget(&self, route: &str, session: &str) {
        self.lock()
            .pins
            .remove(&(route.to_owned(), session.to_owned()));
    }

    /// The instance holding `session` on `route`, if known.
    pub fn instance(&self, route: &str, session: &str) -> Option<[u8; 16]> {
        self.lock()
            .pins
            .get(&(route.to_owned(), session.to_owned()))
            .copied()
    }

    /// How many sessions are pinned.
    pub fn len(&self) -> usize {
        self.lock().pins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the table inconsistent
        // in a way that matters (at worst an id is remembered too long).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Affinity {
    /// Where a request carrying MCP session `session` (if any) on `route`
    /// goes, among the replicas of `registry`.
    pub fn target(&self, registry: &Registry, route: &str, session: Option<&str>) -> Target {
        let Some(session) = session else {
            return Target::Any;
        };
        let Some(instance) = self.instance(route, session) else {
            return Target::Any;
        };
        if let Some(agent) = registry.pick_instance(route, instance) {
            if let Some(served) = agent.served(route).cloned() {
                return Target::Pinned(agent, served);
            }
        }
        if registry.pick(route).is_none() {
            // No replica at all: the usual 503, the agent may be coming back.
            return Target::Any;
        }
        self.forget(route, session);
        Target::Gone
    }

    /// Learns from an agent's answer: a new session id is pinned to the
    /// agent that created it; a deleted session, or one its server no longer
    /// knows (404), is forgotten.
    pub fn observe(
        &self,
        route: &str,
        agent: &AgentSession,
        method: &Method,
        asked: Option<&str>,
        status: StatusCode,
        answer: &HeaderMap,
    ) {
        if let Some(asked) = asked {
            let ended = (*method == Method::DELETE && status.is_success())
                || status == StatusCode::NOT_FOUND;
            if ended {
                self.forget(route, asked);
                return;
            }
        }
        if let Some(created) = session_of(answer) {
            if Some(created) != asked {
                self.learn(route, created, agent.instance_id);
            }
        }
    }
}

/// The MCP session a request names in its header.
pub fn session_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok())
}

/// The 404 of a request whose session lived in a replica that is gone.
pub fn gone(route: &str) -> http::Response<crate::http::body::RespBody> {
    crate::http::response::error(
        StatusCode::NOT_FOUND,
        "unknown_session",
        &format!(
            "route '{route}': the agent that held this MCP session has disconnected; start a new session (initialize without Mcp-Session-Id)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_pinned_per_route_and_forgotten() {
        let a = Affinity::default();
        a.learn("db", "s1", [1; 16]);
        a.learn("other", "s1", [2; 16]);
        assert_eq!(a.instance("db", "s1"), Some([1; 16]));
        assert_eq!(a.instance("other", "s1"), Some([2; 16]));
        assert_eq!(a.instance("db", "s2"), None);
        a.forget("db", "s1");
        assert_eq!(a.instance("db", "s1"), None);
        assert_eq!(a.instance("other", "s1"), Some([2; 16]));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_oldest() {
        let a = Affinity::default();
        for i in 0..MAX_PINNED + 10 {
            a.learn("db", &i.to_string(), [0; 16]);
        }
        assert_eq!(a.len(), MAX_PINNED);
        assert_eq!(a.instance("db", "0"), None);
        assert_eq!(a.instance("db", "9"), None);
        assert!(a.instance("db", "10").is_some());
        // Ids that are too long or empty are not remembered.
        a.learn("db", &"x".repeat(MAX_ID_LEN + 1), [0; 16]);
        a.learn("db", "", [0; 16]);
        assert_eq!(a.len(), MAX_PINNED);
    }
}
