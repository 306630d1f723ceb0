//! One proof of freshness per request: taken once when the request arrives
//! ([`crate::store::Store::prove`]) and handed to every lookup it makes
//! (token, groups, route owner, grants, pins), instead of asking the backend
//! again for each.
//!
//! A proof that says fresh means: every change committed before the request
//! arrived (SQLite), or at most the backend's freshness bound before it
//! (PostgreSQL: 0.5 s), has reached the caches, so what they keep may answer.
//! An entry kept after the proof was taken was read after it, so it is at
//! least as new. A proof that does not (PostgreSQL: the listener's
//! connection is down, or its last read is older than the bound) sends
//! every lookup of the request to the database.

/// Whether the caches may answer this request's lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    fresh: bool,
    /// When the database must have answered the request's reads (a remote
    /// backend that could not prove its caches fresh); `None`: each read
    /// has [`crate::store::REMOTE_READ_BOUND`].
    deadline: Option<tokio::time::Instant>,
}

impl Proof {
    pub(crate) fn new(fresh: bool) -> Proof {
        Proof {
            fresh,
            deadline: None,
        }
    }

    /// Not fresh: the request's reads go to the database and must be
    /// answered by `deadline`.
    pub(crate) fn stale_until(deadline: tokio::time::Instant) -> Proof {
        Proof {
            fresh: false,
            deadline: Some(deadline),
        }
    }

    /// True: the caches may be used.
    pub fn fresh(self) -> bool {
        self.fresh
    }

    /// How long a read under this proof may wait for the database.
    pub(crate) fn read_bound(self) -> std::time::Duration {
        match self.deadline {
            Some(d) => d.saturating_duration_since(tokio::time::Instant::now()),
            None => crate::store::REMOTE_READ_BOUND,
        }
    }
}
