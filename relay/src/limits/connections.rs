//! Per-IP bounds on connections: how many TCP connections (HTTPS and TLS
//! tunnels) and QUIC connections one address may hold at once, and how many
//! QUIC handshakes it may have in progress. Over a bound the connection is
//! refused at once, before any TLS work, and the first refusal per address
//! and minute is logged. An IPv6 address counts by its /64
//! ([`crate::limits::ip_key`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a refused address is logged, at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Counts what each address holds.
#[derive(Default)]
pub struct PerIp {
    max: u32,
    counts: Mutex<HashMap<IpAddr, u32>>,
    logged: Mutex<HashMap<IpAddr, Instant>>,
}

/// One held slot; released when dropped.
pub struct Slot {
    owner: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl PerIp {
    /// At most `max` slots per address (0: unlimited).
    pub fn new(max: u32) -> Arc<PerIp> {
        Arc::new(PerIp {
            max,
            ..PerIp::default()
        })
    }

    /// Takes a slot for `ip`, or says how many it already holds.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, u32> {
        let ip = crate::limits::ip_key::of(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if self.max > 0 && *n >= self.max {
            return Err(*n);
        }
        *n += 1;
        Ok(Slot {
            owner: self.clone(),
            ip,
        })
    }

    /// Whether a refusal of `ip` should be logged now (once a minute).
    pub fn should_log(&self, ip: IpAddr) -> bool {
        let ip = crate::limits::ip_key::of(ip);
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if logged.len() > 10_000 {
            logged.retain(|_, t| now.duration_since(*t) < LOG_EVERY);
        }
        match logged.get(&ip) {
            Some(t) if now.duration_since(*t) < LOG_EVERY => false,
            _ => {
                logged.insert(ip, now);
                true
            }
        }
    }

    /// Slots `ip` holds now.
    pub fn held(&self, ip: IpAddr) -> u32 {
        let ip = crate::limits::ip_key::of(ip);
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(&ip).copied().unwrap_or(0)
    }
}

/// The relay's connection bounds.
pub struct ConnLimits {
    /// TCP and QUIC connections per address.
    pub connections: Arc<PerIp>,
    /// QUIC handshakes in progress per address.
    pub quic_handshakes: Arc<PerIp>,
}

impl ConnLimits {
    pub fn new(connections_per_ip: u32, quic_handshakes_per_ip: u32) -> ConnLimits {
        ConnLimits {
            connections: PerIp::new(connections_per_ip),
            quic_handshakes: PerIp::new(quic_handshakes_per_ip),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_address_and_released_on_drop() {
        let limits = PerIp::new(2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let s1 = limits.acquire(a).expect("1");
        let _s2 = limits.acquire(a).expect("2");
        assert_eq!(limits.acquire(a).err(), Some(2));
        let _other = limits.acquire(b).expect("another address");
        drop(s1);
        assert_eq!(limits.held(a), 1);
        let _s3 = limits.acquire(a).expect("a slot was freed");
        assert!(limits.should_log(a));
        assert!(!limits.should_log(a));
        // Every address of an IPv6 /64 shares its slots.
        let v6a: IpAddr = "2001:db8::1".parse().expect("ip");
        let v6b: IpAddr = "2001:db8::2".parse().expect("ip");
        let _v1 = limits.acquire(v6a).expect("1");
        let _v2 = limits.acquire(v6b).expect("2");
        assert_eq!(limits.acquire(v6a).err(), Some(2));
        assert_eq!(limits.held(v6b), 2);
        let _other = limits
            .acquire("2001:db8:0:1::1".parse().expect("ip"))
            .expect("another /64");
    }

    #[test]
    fn zero_means_unlimited() {
        let limits = PerIp::new(0);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let slots: Vec<Slot> = (0..1000)
            .map(|_| limits.acquire(a).expect("slot"))
            .collect();
        assert_eq!(limits.held(a), 1000);
        drop(slots);
        assert_eq!(limits.held(a), 0);
    }
}
