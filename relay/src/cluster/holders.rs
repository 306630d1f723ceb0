//! Which node holds a session to a route's agent, as last read from the
//! store, kept for [`HOLDER_TTL`] so that forwarding does not read the
//! database on every request. The store does not announce agent sessions
//! coming and going, so an entry is never older than a heartbeat: a node
//! that died is still a holder in the store until its heartbeat is stale
//! ([`STALE_AFTER`](crate::cluster::node::STALE_AFTER), longer than this),
//! and a failed forward forgets the entry at once, so the next request
//! reads the store again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a holder read from the store is used (a heartbeat).
pub const HOLDER_TTL: Duration = crate::cluster::node::HEARTBEAT;
/// Past this many routes kept, expired entries are dropped.
const PRUNE_AT: usize = 4096;

/// Routes' holders (the peer address of a node that holds a session to
/// the route's agent), each with when it was read.
#[derive(Default)]
pub struct Holders {
    by_route: Mutex<HashMap<String, (String, Instant)>>,
}

impl Holders {
    /// The holder of `route` read less than [`HOLDER_TTL`] ago.
    pub fn get(&self, route: &str) -> Option<String> {
        let by_route = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        by_route
            .get(route)
            .filter(|(_, read)| read.elapsed() < HOLDER_TTL)
            .map(|(peer, _)| peer.clone())
    }

    /// `peer` holds `route`'s agent, as the store says now.
    pub fn put(&self, route: &str, peer: &str) {
        let mut by_route = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        if by_route.len() >= PRUNE_AT {
            by_route.retain(|_, (_, read)| read.elapsed() < HOLDER_TTL);
        }
        by_route.insert(route.to_owned(), (peer.to_owned(), Instant::now()));
    }

    /// Forgets every route's holder that is `peer` (a forward to it
    /// failed, or it said it has no agent).
    pub fn forget_peer(&self, peer: &str) {
        let mut by_route = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        by_route.retain(|_, (p, _)| p != peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_kept_until_forgotten_or_expired() {
        let holders = Holders::default();
        assert_eq!(holders.get("db"), None);
        holders.put("db", "10.0.0.1:443");
        assert_eq!(holders.get("db").as_deref(), Some("10.0.0.1:443"));
        // Another holder's failure does not forget this one.
        holders.put("other", "10.0.0.2:443");
        holders.forget_peer("10.0.0.2:443");
        assert_eq!(holders.get("db").as_deref(), Some("10.0.0.1:443"));
        assert_eq!(holders.get("other"), None);
        holders.forget_peer("10.0.0.1:443");
        assert_eq!(holders.get("db"), None);
        holders.put("db", "10.0.0.1:443");
        let mut by_route = holders.by_route.lock().expect("lock");
        let read = &mut by_route.get_mut("db").expect("kept").1;
        let Some(earlier) = read.checked_sub(HOLDER_TTL) else {
            return; // the clock started less than a TTL ago
        };
        *read = earlier;
        drop(by_route);
        assert_eq!(holders.get("db"), None, "expired");
    }
}
