//! The owner's veto (`agent connect --approve writes|all`): an exchange the
//! gate let through, that writes (its SQL, as the policy crate reads it, is
//! not read-only or does not parse) or with `all` that calls any tool, waits
//! for the owner to approve or deny it on the inspector page (or with
//! `POST /api/exchanges/{id}/approve|deny`). Left alone, it is denied after
//! `--approve-timeout`. A denial is answered with a JSON-RPC error naming the
//! reason, and the local server never sees the request.
//!
//! "For this caller for 10 minutes" approves the caller's next exchanges
//! without asking, until then.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::oneshot;

use super::tap::Shape;

/// How long "for this caller" lasts.
pub const REMEMBER_FOR: Duration = Duration::from_secs(10 * 60);

/// Which exchanges wait for the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ApproveMode {
    /// None: the policy alone decides.
    #[default]
    Off,
    /// Tool calls whose SQL writes (or does not parse).
    Writes,
    /// Every tool call.
    All,
}

impl ApproveMode {
    /// Whether an exchange that asks `shape` waits for the owner.
    pub fn needs(self, shape: &Shape) -> bool {
        match self {
            ApproveMode::Off => false,
            ApproveMode::All => shape.tool_calls,
            ApproveMode::Writes => shape.writes,
        }
    }
}

/// What the owner (or the clock) said, and when.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub approved: bool,
    /// `owner (page)`, `owner (api)`, `owner (remembered for this caller)`,
    /// or `timeout`.
    pub by: String,
    /// RFC 3339.
    pub at: String,
    /// How long the exchange waited, in milliseconds.
    pub waited_ms: f64,
}

impl Verdict {
    pub fn now(approved: bool, by: &str, since: Instant) -> Verdict {
        Verdict {
            approved,
            by: by.to_owned(),
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            waited_ms: since.elapsed().as_secs_f64() * 1000.0,
        }
    }
}

/// What a decision on the page or API says.
#[derive(Debug, Clone)]
pub struct Decision {
    pub approve: bool,
    pub by: String,
    /// Also approve this caller's next exchanges for [`REMEMBER_FOR`].
    pub remember: bool,
}

/// Why a decision could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("exchange {0} is not waiting for approval (already decided, timed out, or unknown)")]
    NotPending(u64),
}

struct Waiting {
    caller: String,
    tx: oneshot::Sender<Decision>,
}

/// The exchanges waiting for the owner, and the callers approved for a while.
pub struct Approvals {
    pub mode: ApproveMode,
    pub timeout: Duration,
    waiting: Mutex<HashMap<u64, Waiting>>,
    remembered: Mutex<HashMap<String, Instant>>,
}

impl Approvals {
    pub fn new(mode: ApproveMode, timeout: Duration) -> Approvals {
        Approvals {
            mode,
            timeout,
            waiting: Mutex::new(HashMap::new()),
            remembered: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `caller` was approved "for 10 minutes" and still is.
    pub fn remembered(&self, caller: &str) -> bool {
        let mut r = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        r.retain(|_, until| *until > now);
        r.contains_key(caller)
    }

    /// Exchange `id` of `caller` waits: the receiver hears the decision.
    pub fn wait(&self, id: u64, caller: &str) -> oneshot::Receiver<Decision> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Waiting {
                    caller: caller.to_owned(),
                    tx,
                },
            );
        rx
    }

    /// Exchange `id` no longer waits (timed out, or its stream ended).
    pub fn forget(&self, id: u64) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Whether exchange `id` still waits.
    pub fn is_waiting(&self, id: u64) -> bool {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
    }

    /// The owner decides exchange `id`.
    pub fn decide(&self, id: u64, decision: Decision) -> Result<(), DecideError> {
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
            .ok_or(DecideError::NotPending(id))?;
        if decision.approve && decision.remember {
            self.remembered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(waiting.caller.clone(), Instant::now() + REMEMBER_FOR);
        }
        waiting
            .tx
            .send(decision)
            .map_err(|_| DecideError::NotPending(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(method: &str, sql: Option<&str>) -> Shape {
        let mut arguments = serde_json::Map::new();
        if let Some(sql) = sql {
            arguments.insert("query".into(), sql.into());
        }
        let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method,
            "params": {"name": "write_query", "arguments": arguments}});
        let tap = super::super::Tap::new(1024);
        tap.request(body.to_string().as_bytes());
        tap.shape()
    }

    #[test]
    fn what_waits() {
        let read = message("tools/call", Some("SELECT 1"));
        let write = message("tools/call", Some("DELETE FROM t"));
        let garbage = message("tools/call", Some("DELETE FROM"));
        let list = message("tools/list", None);
        assert!(!ApproveMode::Writes.needs(&read));
        assert!(ApproveMode::Writes.needs(&write));
        assert!(ApproveMode::Writes.needs(&garbage), "fails closed");
        assert!(!ApproveMode::Writes.needs(&list));
        assert!(ApproveMode::All.needs(&read));
        assert!(!ApproveMode::All.needs(&list));
        assert!(!ApproveMode::Off.needs(&write));
    }

    #[tokio::test]
    async fn decisions_reach_the_waiting_exchange_once() {
        let a = Approvals::new(ApproveMode::Writes, Duration::from_secs(1));
        let rx = a.wait(7, "bob@example.com");
        let d = |approve, remember| Decision {
            approve,
            by: "owner (api)".into(),
            remember,
        };
        assert!(!a.remembered("bob@example.com"));
        a.decide(7, d(true, true)).expect("pending");
        assert!(rx.await.expect("decision").approve);
        assert_eq!(
            a.decide(7, d(false, false)),
            Err(DecideError::NotPending(7))
        );
        assert!(a.remembered("bob@example.com"));
        assert!(!a.remembered("eve@example.com"));
        let _rx = a.wait(8, "eve@example.com");
        a.forget(8);
        assert_eq!(a.decide(8, d(true, false)), Err(DecideError::NotPending(8)));
    }
}
