//! A rate limit per client address (an IPv6 address counts by its /64, see
//! [`crate::limits::ip_key`]): `governor`'s GCRA, which behaves as a token bucket of
//! `capacity` tokens refilled at `per_sec`.

use std::cell::Cell;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::Quota;

/// Most addresses tracked; beyond, the ones whose budget has refilled are
/// forgotten.
const MAX_TRACKED: usize = 10_000;

thread_local! {
    /// The time of the check under way on this thread.
    static CHECK_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The limiter's clock: the time its caller gives for the check under way
/// ([`RateLimiter::check`] is told the time, so that tests can step
/// through it), or else now.
#[derive(Debug, Clone, Copy, Default)]
struct CheckClock;

impl Clock for CheckClock {
    type Instant = Instant;

    fn now(&self) -> Instant {
        CHECK_AT.get().unwrap_or_else(Instant::now)
    }
}

/// Allows `capacity` requests at once per address, refilled at `per_sec`.
pub struct RateLimiter {
    keyed: governor::RateLimiter<
        IpAddr,
        DefaultKeyedStateStore<IpAddr>,
        CheckClock,
        NoOpMiddleware<Instant>,
    >,
}

impl RateLimiter {
    pub fn new(capacity: f64, per_sec: f64) -> RateLimiter {
        let burst = NonZeroU32::new(capacity as u32).unwrap_or(NonZeroU32::MIN);
        let quota = Duration::try_from_secs_f64(1.0 / per_sec)
            .ok()
            .and_then(Quota::with_period)
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst);
        RateLimiter {
            keyed: governor::RateLimiter::new(quota, DefaultKeyedStateStore::default(), CheckClock),
        }
    }

    /// Takes one token for `ip` at `now`; the error says when to retry.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let ip = crate::limits::ip_key::of(ip);
        CHECK_AT.set(Some(now));
        if self.keyed.len() >= MAX_TRACKED {
            self.keyed.retain_recent();
        }
        let checked = self
            .keyed
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(now));
        CHECK_AT.set(None);
        checked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_tokens_refill() {
        let limiter = RateLimiter::new(3.0, 0.5);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(a, t0).is_ok());
        }
        let wait = limiter.check(a, t0).expect_err("limited");
        assert_eq!(wait, Duration::from_secs(2));
        // Another address has its own bucket.
        assert!(limiter.check(b, t0).is_ok());
        // An IPv6 /64 is one address.
        let v6a: IpAddr = "2001:db8::1".parse().expect("ip");
        let v6b: IpAddr = "2001:db8::ffff:2".parse().expect("ip");
        let v6other: IpAddr = "2001:db8:0:1::1".parse().expect("ip");
        for _ in 0..3 {
            assert!(limiter.check(v6a, t0).is_ok());
        }
        assert!(limiter.check(v6b, t0).is_err());
        assert!(limiter.check(v6other, t0).is_ok());
        // Two seconds later, one more.
        assert!(limiter.check(a, t0 + Duration::from_secs(2)).is_ok());
        assert!(limiter.check(a, t0 + Duration::from_secs(2)).is_err());
        // Long after, a full burst again (and no more).
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(limiter.check(a, later).is_ok());
        }
        assert!(limiter.check(a, later).is_err());
    }
}
