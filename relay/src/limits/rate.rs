//! Per-route and per-identity request rate limits (`--rate-limit-route`,
//! `--rate-limit-identity`), with `governor`'s GCRA: a limit `N/period`
//! allows a burst of `N` and then one request every `period / N`.
//!
//! A caller over a limit gets 429 with `Retry-After` (in whole seconds, at
//! least one) and the refusal is audited like any other. Both limits are off unless
//! configured.

use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Keys tracked per limiter before idle ones are forgotten.
const MAX_TRACKED: usize = 10_000;

/// A rate: `N/s`, `N/min` or `N/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub period: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || format!("invalid rate {s:?}: expected N/s, N/min or N/h, e.g. 600/min");
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count = n
            .trim()
            .parse::<u32>()
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(bad)?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Rate { count, period })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl Rate {
    fn quota(&self) -> Quota {
        let every = self.period / self.count.get();
        Quota::with_period(every.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(self.count))
            .allow_burst(self.count)
    }
}

/// Which limit refused a request, and when to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// `route` or `identity`.
    pub what: &'static str,
    pub rate: Rate,
    pub retry_after: Duration,
}

impl Limited {
    /// `Retry-After` in whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let s = self.retry_after.as_secs();
        if self.retry_after.subsec_nanos() > 0 || s == 0 {
            s + 1
        } else {
            s
        }
    }
}

struct Limiter {
    rate: Rate,
    keyed: DefaultKeyedRateLimiter<String>,
}

impl Limiter {
    fn new(rate: Rate) -> Limiter {
        Limiter {
            rate,
            keyed: RateLimiter::keyed(rate.quota()),
        }
    }

    fn check(&self, key: &str, clock: &DefaultClock, what: &'static str) -> Result<(), Limited> {
        if self.keyed.len() > MAX_TRACKED {
            self.keyed.retain_recent();
        }
        self.keyed
            .check_key(&key.to_owned())
            .map_err(|not_until| Limited {
                what,
                rate: self.rate,
                retry_after: not_until.wait_time_from(clock.now()),
            })
    }
}

/// The relay's request rate limits.
pub struct RequestLimits {
    route: Option<Limiter>,
    identity: Option<Limiter>,
    clock: DefaultClock,
}

impl RequestLimits {
    pub fn new(route: Option<Rate>, identity: Option<Rate>) -> RequestLimits {
        RequestLimits {
            route: route.map(Limiter::new),
            identity: identity.map(Limiter::new),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request of `identity` to `route`.
    pub fn check(&self, route: &str, identity: &str) -> Result<(), Limited> {
        if let Some(l) = &self.identity {
            l.check(identity, &self.clock, "identity")?;
        }
        if let Some(l) = &self.route {
            l.check(route, &self.clock, "route")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        let r: Rate = "600/min".parse().expect("rate");
        assert_eq!(r.count.get(), 600);
        assert_eq!(r.period, Duration::from_secs(60));
        assert_eq!(r.to_string(), "600/min");
        assert_eq!("5/s".parse::<Rate>().expect("rate").to_string(), "5/s");
        for bad in ["", "600", "0/s", "-1/s", "10/day", "x/s"] {
            let e = bad.parse::<Rate>().expect_err(bad);
            assert!(e.contains("expected N/s, N/min or N/h"), "{e}");
        }
    }

    #[test]
    fn a_burst_passes_then_the_limit_holds_per_key() {
        let limits = RequestLimits::new(None, Some("3/min".parse().expect("rate")));
        for _ in 0..3 {
            assert_eq!(limits.check("db", "alice@example.com"), Ok(()));
        }
        let refused = limits.check("db", "alice@example.com").expect_err("4th");
        assert_eq!(refused.what, "identity");
        // One request every 20 s refills.
        assert!(refused.retry_after_secs() >= 19 && refused.retry_after_secs() <= 20);
        // Another identity has its own budget.
        assert_eq!(limits.check("db", "bob@example.com"), Ok(()));
    }

    #[test]
    fn the_route_limit_is_shared_by_every_caller() {
        let limits = RequestLimits::new(Some("2/h".parse().expect("rate")), None);
        assert_eq!(limits.check("db", "a"), Ok(()));
        assert_eq!(limits.check("db", "b"), Ok(()));
        assert_eq!(limits.check("db", "c").expect_err("3rd").what, "route");
        assert_eq!(limits.check("other", "c"), Ok(()));
    }
}
