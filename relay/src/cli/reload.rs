//! `relay reload`: a running relay asked to read its policy and certificates
//! again, and its answer waited for.

use std::time::Duration;

use super::state_dir::StateDir;

/// Signals the relay of `state`'s directory and prints the outcome; an error
/// when something was refused.
pub fn run(state: StateDir, wait: Duration) -> anyhow::Result<()> {
    let outcome = crate::reload::request(&state.path(), wait)?;
    if outcome.ok {
        println!("{}", outcome.message);
        Ok(())
    } else {
        anyhow::bail!("{}", outcome.message)
    }
}
