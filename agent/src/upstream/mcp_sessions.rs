//! MCP sessions of the built-in SQLite server, bounded per caller.
//!
//! rmcp keeps each session (a task, its channels and caches; about 60 KiB)
//! until it has been idle for five minutes, so a caller who only sends
//! `initialize`, a few hundred a second, could fill the laptop's memory.
//! [`CappedSessions`] is rmcp's [`LocalSessionManager`] with a bound on the
//! sessions each identity holds: the identity of the request being served
//! is set around rmcp's handling of it ([`with_caller`]), and a new session
//! past the bound ends that caller's oldest one (whose client gets 404 on
//! its next request and, as MCP clients do, starts a new session). Refusing
//! the new session instead would lock out a client that opens sessions and
//! never ends them (many do) for the five idle minutes; ending the oldest
//! bounds memory the same and only ever costs the caller its own sessions.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{
    EventStore, RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};

use crate::upstream::per_identity::CallerId;

tokio::task_local! {
    static CALLER: Option<CallerId>;
}

/// Runs `f` (rmcp handling one request) on behalf of `caller`.
pub async fn with_caller<F: Future>(caller: Option<CallerId>, f: F) -> F::Output {
    CALLER.scope(caller, f).await
}

/// [`LocalSessionManager`], at most so many sessions per identity.
#[derive(Debug)]
pub struct CappedSessions {
    inner: LocalSessionManager,
    max: usize,
    held: Mutex<Held>,
}

/// The sessions of each identity, oldest first, and whose each one is.
#[derive(Debug, Default)]
struct Held {
    by_identity: HashMap<String, VecDeque<SessionId>>,
    owner: HashMap<SessionId, String>,
}

impl Held {
    /// Records `id` as `identity`'s newest session; returns the sessions
    /// past `max` that must end, oldest first.
    fn push(&mut self, identity: &str, id: SessionId, max: usize) -> Vec<SessionId> {
        let queue = self.by_identity.entry(identity.to_owned()).or_default();
        queue.push_back(id.clone());
        let mut evicted = Vec::new();
        while queue.len() > max {
            if let Some(old) = queue.pop_front() {
                evicted.push(old);
            }
        }
        self.owner.insert(id, identity.to_owned());
        for old in &evicted {
            self.owner.remove(old);
        }
        evicted
    }

    /// Forgets `id` (ended by DELETE, idle, or eviction).
    fn remove(&mut self, id: &SessionId) {
        let Some(identity) = self.owner.remove(id) else {
            return;
        };
        if let Some(queue) = self.by_identity.get_mut(&identity) {
            queue.retain(|s| s != id);
            if queue.is_empty() {
                self.by_identity.remove(&identity);
            }
        }
    }
}

impl CappedSessions {
    /// At most `max` sessions per identity (at least 1).
    pub fn new(max: usize) -> CappedSessions {
        CappedSessions {
            inner: LocalSessionManager::default(),
            max: max.max(1),
            held: Mutex::new(Held::default()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SessionManager for CappedSessions {
    type Error = LocalSessionManagerError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let caller = CALLER.try_with(Clone::clone).ok().flatten();
        let (id, transport) = self.inner.create_session().await?;
        if let Some(c) = caller {
            let evicted = self.held().push(&c.0, id.clone(), self.max);
            for old in evicted {
                tracing::info!(
                    session = %old,
                    "MCP session ended: its caller opened one more than --sqlite-max-sessions-per-identity"
                );
                let _ = self.inner.close_session(&old).await;
            }
        }
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.held().remove(id);
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_stream(id, message).await
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.resume(id, last_event_id).await
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        self.inner.restore_session(id).await
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.inner.event_store()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(s: &str) -> SessionId {
        SessionId::from(s.to_owned())
    }

    #[test]
    fn a_session_past_the_bound_ends_the_callers_oldest_and_no_one_elses() {
        let mut held = Held::default();
        assert!(held.push("bob", sid("b1"), 2).is_empty());
        assert!(held.push("bob", sid("b2"), 2).is_empty());
        assert!(held.push("alice", sid("a1"), 2).is_empty());
        assert_eq!(held.push("bob", sid("b3"), 2), vec![sid("b1")]);
        held.remove(&sid("b2"));
        assert!(
            held.push("bob", sid("b4"), 2).is_empty(),
            "b2 freed a place"
        );
        assert_eq!(held.push("bob", sid("b5"), 2), vec![sid("b3")]);
        assert_eq!(held.by_identity["alice"], [sid("a1")]);
    }

    #[test]
    fn identities_holding_nothing_are_forgotten() {
        let mut held = Held::default();
        for i in 0..100 {
            let id = sid(&format!("s{i}"));
            held.push(&format!("u{i}"), id.clone(), 1);
            held.remove(&id);
        }
        assert!(held.by_identity.is_empty() && held.owner.is_empty());
    }
}
