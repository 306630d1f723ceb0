//! Sign-in with a local account's password: the limits of
//! [`crate::limits::sign_in_throttle`], then a check in one of the bounded
//! slots of [`crate::identity::password_checks`].

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::error::RelayError;
use crate::limits::sign_in_throttle::Throttled;
use crate::state::SharedState;

/// The outcome of a sign-in with a password.
#[derive(Debug)]
pub enum Verdict {
    Right,
    Wrong,
    /// Not checked: the limits, or every slot busy.
    Refused(Throttled),
    Failed(RelayError),
}

/// Checks `email`'s password for a sign-in from `peer`: the throttle, a
/// free slot (else refused at once), the check off the async workers, and
/// the outcome recorded for the account's back-off.
pub async fn sign_in(state: &SharedState, peer: IpAddr, email: &str, password: &str) -> Verdict {
    let throttle = &state.oauth.sign_in_throttle;
    if let Err(t) = throttle.admit(peer, email, Instant::now()) {
        return Verdict::Refused(t);
    }
    let Some(mut slot) = state.oauth.password_checks.try_slot() else {
        return Verdict::Refused(Throttled::Busy {
            retry_after: Duration::from_secs(1),
        });
    };
    let checked = match state.store.user_password_hash(email).await {
        Ok(stored) => {
            let password = password.to_owned();
            tokio::task::spawn_blocking(move || Ok(slot.check(stored.as_deref(), &password)))
                .await
                .unwrap_or_else(|e| Err(RelayError::Password(e.to_string())))
        }
        Err(e) => Err(e.into()),
    };
    match checked {
        Ok(right) => {
            throttle.record(email, right, Instant::now());
            if right {
                Verdict::Right
            } else {
                Verdict::Wrong
            }
        }
        Err(e) => Verdict::Failed(e),
    }
}
