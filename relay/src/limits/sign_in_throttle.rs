//! How often passwords may be tried (`/oauth/login`, `/device/login`):
//!
//! * per client address ([`crate::limits::ip_key`]: an IPv6 /64 is one address), a
//!   token bucket over every password check, whatever the account: a burst
//!   of [`IP_BURST`], then one every [`IP_REFILL`];
//! * per account (the email typed, known to the relay or not, so that the
//!   answer tells nothing about which accounts exist), a back-off after
//!   [`FREE_FAILURES`] wrong passwords from anywhere: one second, doubling
//!   with each further failure, at most [`MAX_BACKOFF`]. A right password
//!   clears it; failures are forgotten after [`FORGET_AFTER`] without one.
//!
//! The cap on the back-off keeps someone who types wrong passwords on
//! purpose from locking the owner out for longer than a minute at a time,
//! while a guesser spread over many addresses gets about one guess a minute
//! per account.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ratelimit::RateLimiter;

/// Password checks one address may make at once.
pub const IP_BURST: f64 = 10.0;
/// Then one per this long.
pub const IP_REFILL: Duration = Duration::from_secs(6);
/// Wrong passwords an account takes before the back-off starts.
pub const FREE_FAILURES: u32 = 5;
/// The longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Failures are forgotten after this long without another.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Accounts tracked at most; beyond, the oldest quiet ones are forgotten.
const MAX_ACCOUNTS: usize = 10_000;

/// Why a password is not checked now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Throttled {
    /// Too many checks from this address.
    Address { retry_after: Duration },
    /// Too many wrong passwords for this account.
    Account { retry_after: Duration },
    /// Every password check slot is busy
    /// ([`crate::identity::password_checks::MAX_CONCURRENT`]).
    Busy { retry_after: Duration },
}

impl Throttled {
    /// `Retry-After` in whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let d = match self {
            Throttled::Address { retry_after }
            | Throttled::Account { retry_after }
            | Throttled::Busy { retry_after } => *retry_after,
        };
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }

    /// What the sign-in page says.
    pub fn message(&self) -> String {
        let secs = self.retry_after_secs();
        match self {
            Throttled::Address { .. } => {
                format!("Too many sign-in attempts from your network; try again in {secs} s.")
            }
            Throttled::Account { .. } => {
                format!("Too many wrong passwords for this account; try again in {secs} s.")
            }
            Throttled::Busy { .. } => {
                format!("The relay is busy checking other sign-ins; try again in {secs} s.")
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// Until when the account waits, if it does.
    fn blocked_until(&self) -> Option<Instant> {
        let over = self.count.checked_sub(FREE_FAILURES)?;
        let backoff = Duration::from_secs(1u64 << over.min(16)).min(MAX_BACKOFF);
        Some(self.last + backoff)
    }
}

/// The sign-in limits of the relay.
pub struct SignInThrottle {
    per_ip: RateLimiter,
    accounts: Mutex<HashMap<String, Failures>>,
}

impl Default for SignInThrottle {
    fn default() -> Self {
        SignInThrottle {
            per_ip: RateLimiter::new(IP_BURST, 1.0 / IP_REFILL.as_secs_f64()),
            accounts: Mutex::new(HashMap::new()),
        }
    }
}

/// The key of an account: the email as typed, trimmed and lowercased.
fn account_key(email: &str) -> String {
    email.trim().to_lowercase()
}

impl SignInThrottle {
    /// Whether `ip` may have a password for `email` checked at `now`; counts
    /// the check against the address.
    pub fn admit(&self, ip: IpAddr, email: &str, now: Instant) -> Result<(), Throttled> {
        if let Some(until) = self.account_blocked_until(email, now) {
            return Err(Throttled::Account {
                retry_after: until.saturating_duration_since(now),
            });
        }
        self.per_ip
            .check(ip, now)
            .map_err(|retry_after| Throttled::Address { retry_after })
    }

    fn account_blocked_until(&self, email: &str, now: Instant) -> Option<Instant> {
        let accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        accounts
            .get(&account_key(email))
            .and_then(Failures::blocked_until)
            .filter(|until| *until > now)
    }

    /// Records the outcome of a check of `email`'s password at `now`.
    pub fn record(&self, email: &str, right: bool, now: Instant) {
        let key = account_key(email);
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        if right {
            accounts.remove(&key);
            return;
        }
        if accounts.len() >= MAX_ACCOUNTS && !accounts.contains_key(&key) {
            accounts.retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
            if accounts.len() >= MAX_ACCOUNTS {
                // Under a spray of made-up emails: keep the accounts that
                // are backing off.
                accounts.retain(|_, f| f.count >= FREE_FAILURES);
            }
        }
        let f = accounts.entry(key).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.saturating_duration_since(f.last) >= FORGET_AFTER {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn an_account_backs_off_after_five_failures_from_anywhere() {
        let t = SignInThrottle::default();
        let t0 = Instant::now();
        for i in 0..FREE_FAILURES {
            // Each failure from another address: the account counts them all.
            let from = ip(&format!("192.0.2.{i}"));
            assert_eq!(t.admit(from, "alice@example.com", t0), Ok(()));
            t.record("alice@example.com", false, t0);
        }
        // Typed in another case, it is the same account.
        let refused = t
            .admit(ip("198.51.100.1"), " Alice@Example.com", t0)
            .expect_err("backing off");
        assert_eq!(
            refused,
            Throttled::Account {
                retry_after: Duration::from_secs(1)
            }
        );
        assert_eq!(refused.retry_after_secs(), 1);
        // Another account is not affected.
        assert_eq!(t.admit(ip("198.51.100.1"), "bob@example.com", t0), Ok(()));
        // After the second, one more try; failing doubles the wait.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(t.admit(ip("198.51.100.2"), "alice@example.com", t1), Ok(()));
        t.record("alice@example.com", false, t1);
        let refused = t
            .admit(ip("198.51.100.2"), "alice@example.com", t1)
            .expect_err("backing off");
        assert_eq!(refused.retry_after_secs(), 2);
        // Never longer than the cap.
        let mut now = t1;
        for _ in 0..20 {
            now += MAX_BACKOFF;
            t.record("alice@example.com", false, now);
        }
        let refused = t
            .admit(ip("198.51.100.3"), "alice@example.com", now)
            .expect_err("backing off");
        assert_eq!(refused.retry_after_secs(), MAX_BACKOFF.as_secs());
        // The right password clears it.
        let later = now + MAX_BACKOFF;
        assert_eq!(
            t.admit(ip("198.51.100.4"), "alice@example.com", later),
            Ok(())
        );
        t.record("alice@example.com", true, later);
        t.record("alice@example.com", false, later);
        assert_eq!(
            t.admit(ip("198.51.100.4"), "alice@example.com", later),
            Ok(())
        );
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_while() {
        let t = SignInThrottle::default();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            t.record("alice@example.com", false, t0);
        }
        let later = t0 + FORGET_AFTER;
        t.record("alice@example.com", false, later);
        assert_eq!(t.admit(ip("192.0.2.1"), "alice@example.com", later), Ok(()));
    }

    #[test]
    fn an_address_has_a_budget_over_every_account() {
        let t = SignInThrottle::default();
        let t0 = Instant::now();
        for i in 0..IP_BURST as u32 {
            assert_eq!(
                t.admit(ip("2001:db8::1"), &format!("u{i}@example.com"), t0),
                Ok(())
            );
        }
        // The same /64 shares the budget.
        let refused = t
            .admit(ip("2001:db8::2"), "alice@example.com", t0)
            .expect_err("limited");
        assert!(matches!(refused, Throttled::Address { .. }), "{refused:?}");
        assert_eq!(refused.retry_after_secs(), IP_REFILL.as_secs());
        assert_eq!(
            t.admit(ip("2001:db8:1::1"), "alice@example.com", t0),
            Ok(())
        );
        assert!(t
            .admit(ip("2001:db8::1"), "alice@example.com", t0 + IP_REFILL)
            .is_ok());
    }
}
