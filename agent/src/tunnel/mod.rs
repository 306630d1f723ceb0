//! The tunnel to the relay: [`dial`] (QUIC raced against TLS over TCP),
//! [`session`] (the hello, then each stream the relay opens, through the
//! gate to the upstream), [`connect`] (both, again after every loss, with
//! backoff) and, with the cargo feature `embedded-relay`, the relay run
//! in-process when `agent connect` has no `--relay` ([`embedded`]).

pub mod connect;
pub mod dial;
#[cfg(feature = "embedded-relay")]
pub mod embedded;
pub mod session;
