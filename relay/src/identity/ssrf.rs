//! Which addresses the relay refuses to connect to when it fetches a URL
//! named by a client (server-side request forgery guard): everything that
//! is not a public unicast address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` may not be connected to, or `None` when it is a public unicast
/// address. Loopback addresses pass when `allow_loopback` (development).
/// IPv4-mapped and IPv4-compatible IPv6 addresses are judged as the IPv4
/// address they carry.
pub fn blocked(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4, allow_loopback),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => blocked_v4(v4, allow_loopback),
            None => blocked_v6(v6, allow_loopback),
        },
    }
}

fn blocked_v4(ip: Ipv4Addr, allow_loopback: bool) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        return (!allow_loopback).then_some("a loopback address");
    }
    Some(match (a, b, c) {
        (0, _, _) => "an unspecified (\"this network\") address",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "a private address",
        (100, 64..=127, _) => "a shared (carrier-grade NAT) address",
        (169, 254, _) => "a link-local address",
        (192, 0, 0) => "an IETF protocol assignment address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address",
        _ => return None,
    })
}

fn blocked_v6(ip: Ipv6Addr, allow_loopback: bool) -> Option<&'static str> {
    if ip.is_loopback() {
        return (!allow_loopback).then_some("a loopback address");
    }
    let s = ip.segments();
    Some(match s[0] {
        _ if ip.is_unspecified() => "an unspecified address",
        0xfc00..=0xfdff => "a unique-local address",
        0xfe80..=0xfebf => "a link-local address",
        0xfec0..=0xfeff => "a site-local address",
        0xff00..=0xffff => "a multicast address",
        // NAT64 (64:ff9b::/96 and 64:ff9b:1::/48) reaches IPv4 space
        // whose address we cannot judge here.
        0x0064 if s[1] == 0xff9b => "a NAT64 address",
        0x2001 if s[1] == 0x0db8 => "a documentation address",
        // Teredo and 6to4 tunnel to embedded IPv4 addresses.
        0x2001 if s[1] == 0 => "a Teredo address",
        0x2002 => "a 6to4 address",
        0x0100 if s[1..4] == [0, 0, 0] => "a discard-only address",
        // Only 2000::/3 is global unicast.
        0x2000..=0x3fff => return None,
        _ => "a reserved address",
    })
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`) or
/// IPv4-compatible (`::a.b.c.d`, deprecated) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    // `::` and `::1` are IPv6's own unspecified and loopback addresses.
    (s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback())
        .then(|| ip.to_ipv4())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ip: &str, allow_loopback: bool) -> Option<&'static str> {
        blocked(ip.parse().expect("an address"), allow_loopback)
    }

    #[test]
    fn public_unicast_addresses_pass() {
        for ok in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(check(ok, false), None, "{ok}");
        }
    }

    #[test]
    fn every_blocked_range_is_refused() {
        for (ip, why) in [
            ("127.0.0.1", "a loopback address"),
            ("127.255.255.254", "a loopback address"),
            ("0.0.0.0", "an unspecified (\"this network\") address"),
            ("0.1.2.3", "an unspecified (\"this network\") address"),
            ("10.0.0.1", "a private address"),
            ("172.16.0.1", "a private address"),
            ("172.31.255.255", "a private address"),
            ("192.168.1.1", "a private address"),
            ("100.64.0.1", "a shared (carrier-grade NAT) address"),
            ("169.254.169.254", "a link-local address"),
            ("192.0.0.8", "an IETF protocol assignment address"),
            ("192.0.2.1", "a documentation address"),
            ("198.51.100.1", "a documentation address"),
            ("203.0.113.1", "a documentation address"),
            ("198.18.0.1", "a benchmarking address"),
            ("224.0.0.1", "a multicast address"),
            ("239.255.255.250", "a multicast address"),
            ("240.0.0.1", "a reserved or broadcast address"),
            ("255.255.255.255", "a reserved or broadcast address"),
            ("::1", "a loopback address"),
            ("::", "an unspecified address"),
            ("fc00::1", "a unique-local address"),
            ("fd12:3456::1", "a unique-local address"),
            ("fe80::1", "a link-local address"),
            ("febf::1", "a link-local address"),
            ("fec0::1", "a site-local address"),
            ("ff02::1", "a multicast address"),
            ("64:ff9b::a00:1", "a NAT64 address"),
            ("2001:db8::1", "a documentation address"),
            ("2001::1", "a Teredo address"),
            ("2002:a00:1::1", "a 6to4 address"),
            ("100::1", "a discard-only address"),
            ("4000::1", "a reserved address"),
        ] {
            assert_eq!(check(ip, false), Some(why), "{ip}");
        }
    }

    #[test]
    fn mapped_and_compatible_addresses_are_judged_as_ipv4() {
        assert_eq!(check("::ffff:127.0.0.1", false), Some("a loopback address"));
        assert_eq!(check("::ffff:10.1.2.3", false), Some("a private address"));
        assert_eq!(
            check("::ffff:169.254.169.254", false),
            Some("a link-local address")
        );
        assert_eq!(
            check("::ffff:192.168.0.1", false),
            Some("a private address")
        );
        assert_eq!(check("::10.1.2.3", false), Some("a private address"));
        assert_eq!(check("::127.0.0.1", false), Some("a loopback address"));
        assert_eq!(
            check("::ffff:0.0.0.0", false),
            Some("an unspecified (\"this network\") address")
        );
    }

    #[test]
    fn the_development_flag_allows_loopback_only() {
        assert_eq!(check("127.0.0.1", true), None);
        assert_eq!(check("::1", true), None);
        assert_eq!(check("::ffff:127.0.0.1", true), None);
        assert_eq!(check("10.0.0.1", true), Some("a private address"));
        assert_eq!(check("169.254.169.254", true), Some("a link-local address"));
        assert_eq!(check("fd00::1", true), Some("a unique-local address"));
        assert_eq!(
            check("0.0.0.0", true),
            Some("an unspecified (\"this network\") address")
        );
    }
}
