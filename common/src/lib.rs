//! What the `relay` and `agent` binaries share, so that the agent does not
//! link the relay: log setup ([`logging`]), lines written off the
//! requests' path ([`lines`]), the signals that stop them
//! ([`signals`]), secrets read from a file ([`secret_file`]), hop-by-hop
//! headers ([`headers`]), the constants of `agent login`'s device grant
//! ([`device_grant`]), random hex ([`random_hex`]) and the clock ([`now`]).

#![forbid(unsafe_code)]

pub mod device_grant;
pub mod headers;
pub mod lines;
pub mod logging;
pub mod secret_file;
pub mod signals;

use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // The system RNG does not fail on supported platforms; if it ever did,
    // continuing with zeros would mint guessable credentials, so stop.
    if SystemRandom::new().fill(&mut buf).is_err() {
        panic!("the system random number generator failed");
    }
    hex::encode(buf)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
