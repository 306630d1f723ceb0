//! One proof of freshness per request: taken once when the request arrives
//! ([`crate::store::Store::prove`]) and handed to every lookup it makes
//! (token, groups, route owner, grants, pins), instead of asking the backend
//! again for each.
//!
//! A proof that says fresh means: every change committed before the request
//! arrived (SQLite), or at most the backend's freshness bound before it
//! (PostgreSQL: 1 s), has reached the caches, so what they keep may answer.
//! An entry kept after the proof was taken was read after it, so it is at
//! least as new. A proof that does not (PostgreSQL: the listener's
//! connection is down, or its last read is older than the bound) sends
//! every lookup of the request to the database.

/// Whether the caches may answer this request's lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    fresh: bool,
}

impl Proof {
    pub(crate) fn new(fresh: bool) -> Proof {
        Proof { fresh }
    }

    /// True: the caches may be used.
    pub fn fresh(self) -> bool {
        self.fresh
    }
}
