//! Bounds per caller: how many of something (SQLite tool calls in flight,
//! stdio sessions) one identity may hold at once, so that one caller cannot
//! take what the others need.
//!
//! The identity is the subject the relay authenticated, from the exchange
//! head ([`protocol::ExchangeHead::identity`]); the agent hands it to the
//! MCP servers it runs as a request extension ([`CallerId`]). A request that
//! carries none (the benchmark's direct baseline, unit tests) is not
//! counted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Who is asking: the subject the relay authenticated (an email). Set on
/// each request the agent hands to a local MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallerId(pub String);

impl CallerId {
    /// The caller of `req`, if the agent set one.
    pub fn of<B>(req: &http::Request<B>) -> Option<&CallerId> {
        req.extensions().get::<CallerId>()
    }
}

/// Counts what each identity holds, up to `max`.
#[derive(Debug)]
pub struct PerIdentity {
    max: usize,
    counts: Mutex<HashMap<String, usize>>,
}

/// One held slot; released when dropped.
#[derive(Debug)]
pub struct Slot {
    owner: Arc<PerIdentity>,
    identity: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.identity) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.identity);
            }
        }
    }
}

impl PerIdentity {
    /// At most `max` slots per identity.
    pub fn new(max: usize) -> Arc<PerIdentity> {
        Arc::new(PerIdentity {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a slot for `identity`, or says how many it already holds.
    pub fn acquire(self: &Arc<Self>, identity: &str) -> Result<Slot, usize> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(identity.to_owned()).or_insert(0);
        if *n >= self.max {
            return Err(*n);
        }
        *n += 1;
        Ok(Slot {
            owner: self.clone(),
            identity: identity.to_owned(),
        })
    }

    /// Slots `identity` holds now.
    #[cfg(test)]
    pub fn held(&self, identity: &str) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(identity).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_identity_and_released_on_drop() {
        let limits = PerIdentity::new(2);
        let s1 = limits.acquire("bob@example.com").expect("1");
        let _s2 = limits.acquire("bob@example.com").expect("2");
        assert_eq!(limits.acquire("bob@example.com").err(), Some(2));
        let _other = limits
            .acquire("alice@example.com")
            .expect("another identity");
        drop(s1);
        assert_eq!(limits.held("bob@example.com"), 1);
        let _s3 = limits.acquire("bob@example.com").expect("a slot was freed");
        assert_eq!(limits.held("bob@example.com"), 2);
    }

    #[test]
    fn identities_holding_nothing_are_forgotten() {
        let limits = PerIdentity::new(1);
        for i in 0..100 {
            drop(limits.acquire(&format!("u{i}@example.com")).expect("slot"));
        }
        assert!(limits
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty());
    }
}
