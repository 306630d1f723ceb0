//! The key every per-address limit of the relay counts under: an IPv4
//! address as is (also when it arrives IPv4-mapped on a dual-stack socket),
//! an IPv6 address by its /64 — one subscriber's network, which hands each
//! of its devices (and any attacker) a whole /64 to choose addresses from.

use std::net::{IpAddr, Ipv6Addr};

/// The address a per-address limit counts `ip` under.
pub fn of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_and_ipv4_as_is() {
        assert_eq!(of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(of(ip("2001:db8:1:2:ffff:1:2:3")), ip("2001:db8:1:2::"));
        assert_ne!(of(ip("2001:db8:1:3::1")), of(ip("2001:db8:1:2::1")));
        assert_eq!(of(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_ne!(of(ip("192.0.2.7")), of(ip("192.0.2.8")));
        // IPv4-mapped IPv6 is the IPv4 address, not the /64 of ::ffff:0:0.
        assert_eq!(of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_ne!(of(ip("::ffff:192.0.2.7")), of(ip("::ffff:192.0.2.8")));
        assert_eq!(of(ip("::1")), ip("::"));
    }
}
