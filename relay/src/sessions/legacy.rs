//! The open streams of the legacy HTTP+SSE transport ([`crate::gateway::legacy_sse`]),
//! as the relay's state holds them: by id, bounded per identity.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// Open legacy streams per identity; one more gets 429.
pub const MAX_SESSIONS_PER_IDENTITY: usize = 8;

/// The legacy sessions of a relay, by id.
#[derive(Default)]
pub struct LegacySessions {
    by_id: Mutex<HashMap<String, Arc<LegacySession>>>,
}

/// One open legacy stream.
pub struct LegacySession {
    pub id: String,
    pub route: String,
    /// The identity that opened it (not necessarily the route's owner);
    /// only it may POST to it.
    pub owner: String,
    /// The name of the token that opened it.
    pub client: String,
    tx: mpsc::Sender<Bytes>,
    upstream: Mutex<Upstream>,
    pub(crate) in_flight: Arc<Semaphore>,
    /// Cancelled when the stream ends.
    pub(crate) closed: CancellationToken,
}

/// What the relay learned from the agent's answers.
#[derive(Default, Clone)]
pub(crate) struct Upstream {
    pub(crate) session: Option<HeaderValue>,
    pub(crate) protocol_version: Option<HeaderValue>,
}

impl LegacySession {
    /// A session that `owner` opened with the token named `client` on
    /// `route`, whose events go to `tx`, taking at most `in_flight` POSTs at
    /// a time.
    pub(crate) fn new(
        id: String,
        route: String,
        owner: String,
        client: String,
        tx: mpsc::Sender<Bytes>,
        in_flight: usize,
    ) -> LegacySession {
        LegacySession {
            id,
            route,
            owner,
            client,
            tx,
            upstream: Mutex::new(Upstream::default()),
            in_flight: Arc::new(Semaphore::new(in_flight)),
            closed: CancellationToken::new(),
        }
    }
}

impl LegacySessions {
    pub(crate) fn get(&self, id: &str) -> Option<Arc<LegacySession>> {
        self.lock().get(id).cloned()
    }

    /// Adds a session unless its owner has too many; the error is how many.
    pub(crate) fn insert(&self, session: Arc<LegacySession>) -> Result<(), usize> {
        let mut map = self.lock();
        let open = map.values().filter(|s| s.owner == session.owner).count();
        if open >= MAX_SESSIONS_PER_IDENTITY {
            return Err(open);
        }
        map.insert(session.id.clone(), session);
        Ok(())
    }

    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// How many legacy streams are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LegacySession>>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl LegacySession {
    pub(crate) fn upstream(&self) -> Upstream {
        self.upstream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn learn_session(&self, id: HeaderValue) {
        self.upstream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .session = Some(id);
    }

    /// Queues one JSON-RPC message (or batch) as a `message` event, waiting
    /// while the queue is full. False when the stream is gone.
    pub(crate) async fn send(&self, message: &[u8]) -> bool {
        let data = match serde_json::from_slice::<serde_json::Value>(message) {
            Ok(v) => {
                self.learn_version(&v);
                v.to_string()
            }
            Err(_) => String::from_utf8_lossy(message).into_owned(),
        };
        let mut event = BytesMut::with_capacity(data.len() + 32);
        event.extend_from_slice(b"event: message\n");
        for line in data.lines() {
            event.extend_from_slice(b"data: ");
            event.extend_from_slice(line.as_bytes());
            event.extend_from_slice(b"\n");
        }
        event.extend_from_slice(b"\n");
        self.tx.send(event.freeze()).await.is_ok()
    }

    /// The protocol version the server chose, from its `initialize` result.
    fn learn_version(&self, message: &serde_json::Value) {
        let Some(v) = message
            .get("result")
            .filter(|r| r.get("serverInfo").is_some())
            .and_then(|r| r.get("protocolVersion"))
            .and_then(|v| v.as_str())
        else {
            return;
        };
        if let Ok(v) = HeaderValue::from_str(v) {
            self.upstream
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .protocol_version = Some(v);
        }
    }
}
