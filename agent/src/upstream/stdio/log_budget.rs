//! A budget for log lines a child can cause: a stdio server that floods its
//! stdout with junk (lines that are not JSON-RPC, answers nobody asked for)
//! must not flood the agent's log with one line each. The first few of each
//! window are logged; the rest are counted, and the count is logged with the
//! next line that is, or when the child ends.

use std::time::Duration;

use tokio::time::Instant;

/// Lines logged per window at most.
pub const BURST: u32 = 5;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct LogBudget {
    burst: u32,
    window: Duration,
    started: Instant,
    used: u32,
    suppressed: u64,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget::new(BURST, WINDOW)
    }
}

impl LogBudget {
    pub fn new(burst: u32, window: Duration) -> LogBudget {
        LogBudget {
            burst,
            window,
            started: Instant::now(),
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether to log one more line at `now`: `Some(n)` with the number of
    /// lines left unlogged since the last one that was, `None` to stay
    /// quiet (the line is counted).
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if now.duration_since(self.started) >= self.window {
            self.started = now;
            self.used = 0;
        }
        if self.used >= self.burst {
            self.suppressed += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.suppressed))
    }

    /// The lines left unlogged so far (and forgets them).
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_logged_then_counted_until_the_next_window() {
        let mut b = LogBudget::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.admit(t0), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(b.admit(t0 + Duration::from_secs(30)), None);
        }
        // The next window: logged again, with the count of the quiet ones.
        assert_eq!(b.admit(t0 + Duration::from_secs(61)), Some(1000));
        assert_eq!(b.admit(t0 + Duration::from_secs(62)), Some(0));
        assert_eq!(b.admit(t0 + Duration::from_secs(62)), Some(0));
        assert_eq!(b.admit(t0 + Duration::from_secs(62)), None);
        assert_eq!(b.take_suppressed(), 1);
        assert_eq!(b.take_suppressed(), 0);
    }
}
