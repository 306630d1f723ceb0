//! The connections of the built-in SQLite server, in pools: the reading
//! connections, so that a slow read does not hold back the others, shared
//! fairly (one caller holds at most its share of them at once, so another
//! caller always finds one free unless several callers each hold their
//! share); and the one writing connection, a pool of one.
//!
//! Taking a connection blocks (the database calls run on the blocking pool)
//! for at most the wait given, so a long write cannot hold every other write
//! waiting without end either.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// The pool.
pub(crate) struct ConnPool {
    state: Mutex<State>,
    freed: Condvar,
    /// Connections one caller may hold at once.
    share: usize,
    size: usize,
}

struct State {
    free: Vec<Connection>,
    /// Connections each caller holds now.
    held: HashMap<String, usize>,
    /// Callers waiting for a connection: a connection given back wakes
    /// them, and costs nothing more when there are none.
    waiting: usize,
}

/// A connection taken from a pool; back in it when dropped.
pub(crate) struct Pooled<'p> {
    pool: &'p ConnPool,
    conn: Option<Connection>,
    caller: Option<String>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        // Only `Drop` takes it out.
        self.conn
            .as_ref()
            .expect("a pooled connection is held until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn
            .as_mut()
            .expect("a pooled connection is held until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let mut st = self.pool.lock();
        if let Some(conn) = self.conn.take() {
            st.free.push(conn);
        }
        if let Some(caller) = &self.caller {
            if let Some(n) = st.held.get_mut(caller) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.held.remove(caller);
                }
            }
        }
        let waiting = st.waiting > 0;
        drop(st);
        if waiting {
            self.pool.freed.notify_all();
        }
    }
}

impl ConnPool {
    /// A pool of `conns`; one caller holds at most half of them (rounded
    /// up).
    pub(crate) fn new(conns: Vec<Connection>) -> ConnPool {
        let size = conns.len();
        ConnPool {
            state: Mutex::new(State {
                free: conns,
                held: HashMap::new(),
                waiting: 0,
            }),
            freed: Condvar::new(),
            share: size.div_ceil(2).max(1),
            size,
        }
    }

    /// How many connections the pool has.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection for `caller` (`None`: not counted per caller), waiting
    /// up to `wait` for one to be free and within the caller's share.
    /// `None` if none came in time.
    pub(crate) fn take(&self, caller: Option<&str>, wait: Duration) -> Option<Pooled<'_>> {
        let deadline = Instant::now() + wait;
        let mut st = self.lock();
        loop {
            let within_share =
                caller.is_none_or(|c| st.held.get(c).copied().unwrap_or(0) < self.share);
            if within_share {
                if let Some(conn) = st.free.pop() {
                    if let Some(c) = caller {
                        *st.held.entry(c.to_owned()).or_insert(0) += 1;
                    }
                    return Some(Pooled {
                        pool: self,
                        conn: Some(conn),
                        caller: caller.map(str::to_owned),
                    });
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            st.waiting += 1;
            st = self
                .freed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            st.waiting -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> ConnPool {
        ConnPool::new(
            (0..n)
                .map(|_| Connection::open_in_memory().expect("open"))
                .collect(),
        )
    }

    #[test]
    fn one_caller_holds_at_most_its_share() {
        let p = pool(4);
        let a1 = p.take(Some("a"), Duration::ZERO).expect("1st");
        let _a2 = p.take(Some("a"), Duration::ZERO).expect("2nd");
        assert!(p.take(Some("a"), Duration::from_millis(50)).is_none());
        // Another caller still finds one.
        let _b = p.take(Some("b"), Duration::ZERO).expect("b");
        drop(a1);
        let _a3 = p.take(Some("a"), Duration::ZERO).expect("freed");
    }

    #[test]
    fn a_waiting_caller_gets_the_next_free_connection() {
        let p = std::sync::Arc::new(pool(1));
        let held = p.take(None, Duration::ZERO).expect("only");
        assert!(p.take(None, Duration::from_millis(20)).is_none());
        std::thread::scope(|s| {
            let waiter = s.spawn(|| p.take(Some("b"), Duration::from_secs(30)).is_some());
            std::thread::sleep(Duration::from_millis(50));
            drop(held);
            assert!(waiter.join().expect("thread"));
        });
    }
}
