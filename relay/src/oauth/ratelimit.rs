//! A token bucket per client address (an IPv6 address counts by its /64,
//! see [`crate::ip_key`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses tracked; beyond, buckets that have refilled are forgotten.
const MAX_TRACKED: usize = 10_000;

/// Allows `capacity` requests at once per address, refilled at `per_sec`.
pub struct RateLimiter {
    capacity: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(capacity: f64, per_sec: f64) -> RateLimiter {
        RateLimiter {
            capacity,
            per_sec,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `ip` at `now`; the error says when to retry.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let ip = crate::ip_key::of(ip);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            let (capacity, per_sec) = (self.capacity, self.per_sec);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec < capacity
            });
        }
        let (tokens, at) = buckets.entry(ip).or_insert((self.capacity, now));
        let refilled = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_sec)
            .min(self.capacity);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            Err(Duration::from_secs_f64((1.0 - refilled) / self.per_sec))
        }
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
