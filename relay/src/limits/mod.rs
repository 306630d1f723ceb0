//! Bounds on what one caller may take: per-route and per-identity request
//! rates, per-address connections and QUIC handshakes, and the key an address
//! counts under (IPv6 by /64); per-address rates of the authorization
//! server's endpoints ([`ratelimit`]) and password tries ([`sign_in_throttle`]).

pub mod connections;
pub mod ip_key;
pub mod rate;
pub mod ratelimit;
pub mod sign_in_throttle;
