//! MCP sessions of the built-in SQLite server, bounded per caller.
//!
//! rmcp keeps each session (a task, its channels and caches; about 60 KiB)
//! until it has been idle for five minutes, so a caller who only sends
//! `initialize`, a few hundred a second, could fill the laptop's memory.
//! [`CappedSessions`] is rmcp's [`LocalSessionManager`] with a bound on the
//! sessions each identity holds: the identity of the request being served
//! is set around rmcp's handling of it ([`with_caller`]), a new session
//! takes one of its slots, and the slot is given back when rmcp closes the
//! session (DELETE, idle, or the server stopping).

use std::collections::HashMap;
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

use crate::per_identity::{CallerId, PerIdentity, Slot};

tokio::task_local! {
    static CALLER: Option<CallerId>;
}

/// Runs `f` (rmcp handling one request) on behalf of `caller`.
pub async fn with_caller<F: Future>(caller: Option<CallerId>, f: F) -> F::Output {
    CALLER.scope(caller, f).await
}

/// Why a session could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("this caller already holds {0} MCP sessions (the agent's bound, --sqlite-max-sessions-per-identity): end one (DELETE) or let one go idle")]
    TooMany(usize),
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
}

/// [`LocalSessionManager`], at most so many sessions per identity.
#[derive(Debug)]
pub struct CappedSessions {
    inner: LocalSessionManager,
    per_identity: Arc<PerIdentity>,
    slots: Mutex<HashMap<SessionId, Slot>>,
}

impl CappedSessions {
    /// At most `max` sessions per identity (at least 1).
    pub fn new(max: usize) -> CappedSessions {
        CappedSessions {
            inner: LocalSessionManager::default(),
            per_identity: PerIdentity::new(max.max(1)),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.per_identity.max()
    }

    /// Sessions `identity` holds now.
    pub fn held(&self, identity: &str) -> usize {
        self.per_identity.held(identity)
    }
}

impl SessionManager for CappedSessions {
    type Error = SessionError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let caller = CALLER.try_with(Clone::clone).ok().flatten();
        let slot = match caller {
            Some(c) => Some(
                self.per_identity
                    .acquire(&c.0)
                    .map_err(SessionError::TooMany)?,
            ),
            None => None,
        };
        let (id, transport) = self.inner.create_session().await?;
        if let Some(slot) = slot {
            self.slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone(), slot);
        }
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        drop(slot);
        Ok(self.inner.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.create_stream(id, message).await?)
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.resume(id, last_event_id).await?)
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        Ok(self.inner.restore_session(id).await?)
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.inner.event_store()
    }
}
