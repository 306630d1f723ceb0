//! Live reload: the organisation's policy and the TLS certificate files are
//! read again while the relay runs (SIGHUP, or `relay reload`).
//!
//! Each part is checked before it replaces anything: a policy that does not
//! validate, or a certificate that cannot be read or does not fit its key,
//! is refused with the file and the problem, and the running one stays.
//! Connected agents, their tunnels and requests in flight are not touched:
//! the next request is decided by the new policy, the next TLS handshake
//! gets the new certificate.
//!
//! The relay writes each reload's outcome to `<state-dir>/reload.json`
//! (pid, sequence number, ok, message); `relay reload` signals the relay
//! named by `<state-dir>/relay.pid` ([`pidfile`]) and waits for that
//! file to show the outcome of its signal.

pub mod pidfile;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::TlsSource;
use crate::error::RelayError;
use crate::metrics::Reloaded;
use crate::state::RelayState;
use crate::tls::certs;
use crate::tls::resolver::not_after;

/// What one reload did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// The relay process that reloaded.
    pub pid: u32,
    /// Counts the reloads of that process (1, 2, …).
    pub seq: u64,
    /// Everything that was to be reloaded was.
    pub ok: bool,
    /// One sentence per part (policy, certificate).
    pub message: String,
}

/// Reloads the policy and the certificate of a running relay.
pub fn reload(state: &RelayState, seq: u64) -> Outcome {
    let mut ok = true;
    let mut said = Vec::new();
    match state.policies.org_path() {
        None => said.push("no --policy to reload".to_owned()),
        Some(path) => match state.policies.reload() {
            Ok(n) => {
                state.metrics.reloaded(Reloaded::policy, true);
                tracing::info!(policy = %path.display(), policies = n, "organisation policy reloaded");
                said.push(format!("policy {} reloaded ({n} policies)", path.display()));
            }
            Err(e) => {
                ok = false;
                let e = one_line(&e);
                state.metrics.reloaded(Reloaded::policy, false);
                tracing::error!(policy = %path.display(), "new organisation policy rejected, the old one stays: {e}");
                said.push(format!(
                    "policy {} rejected, the old one stays: {e}",
                    path.display()
                ));
            }
        },
    }
    match &state.config.tls {
        TlsSource::Files { cert, key } => match swap_certificate(state, cert, key) {
            Ok(expiry) => {
                state.metrics.reloaded(Reloaded::certificate, true);
                tracing::info!(cert = %cert.display(), not_after = %expiry, "TLS certificate reloaded");
                said.push(format!(
                    "certificate {} reloaded (valid until {expiry})",
                    cert.display()
                ));
            }
            Err(e) => {
                ok = false;
                let e = one_line(&e);
                state.metrics.reloaded(Reloaded::certificate, false);
                tracing::error!(cert = %cert.display(), key = %key.display(), "new TLS certificate rejected, the old one stays: {e}");
                said.push(format!(
                    "certificate {} rejected, the old one stays: {e}",
                    cert.display()
                ));
            }
        },
        TlsSource::SelfSigned => said.push("self-signed certificate: nothing to reload".into()),
        TlsSource::Acme(_) => {
            said.push("ACME certificate: renewed by the relay itself, nothing to reload".into())
        }
    }
    Outcome {
        pid: std::process::id(),
        seq,
        ok,
        message: said.join("; "),
    }
}

/// An error on one log line (a policy's problems come one per line).
fn one_line(e: &RelayError) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads the certificate files, and serves them if they fit; returns the
/// new certificate's expiry (RFC 3339).
fn swap_certificate(state: &RelayState, cert: &Path, key: &Path) -> Result<String, RelayError> {
    let loaded = certs::from_files(cert, key)?;
    let leaf = loaded
        .chain
        .first()
        .ok_or_else(|| RelayError::TlsCertificate(format!("{}: no certificate", cert.display())))?;
    let expiry = not_after(leaf)?;
    state.certs.swap(crate::tls::resolver::certified_key(
        loaded.chain,
        loaded.key,
    )?);
    state.metrics.set_certificate_expiry(expiry);
    let when = std::time::UNIX_EPOCH + Duration::from_secs(expiry.max(0) as u64);
    Ok(humantime::format_rfc3339_seconds(when).to_string())
}

/// Where a relay writes its reloads' outcomes.
pub fn outcome_path(state_dir: &Path) -> PathBuf {
    state_dir.join("reload.json")
}

/// Writes `outcome` for `relay reload` to read (whole, via a rename).
pub fn record(state_dir: &Path, outcome: &Outcome) -> Result<(), RelayError> {
    let path = outcome_path(state_dir);
    let tmp = state_dir.join(format!("reload.json.{}", std::process::id()));
    let text = serde_json::to_string(outcome).unwrap_or_default();
    let err = |source| RelayError::File {
        what: "cannot write the reload outcome",
        path: path.clone(),
        source,
    };
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)
}

fn read_outcome(state_dir: &Path) -> Option<Outcome> {
    let text = std::fs::read_to_string(outcome_path(state_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// `relay reload`: signals the relay serving `state_dir` and waits (up to
/// `wait`) for the outcome of that reload.
pub fn request(state_dir: &Path, wait: Duration) -> Result<Outcome, RelayError> {
    let pid = pidfile::running(state_dir)?;
    let before = read_outcome(state_dir)
        .filter(|o| o.pid == pid)
        .map(|o| o.seq)
        .unwrap_or(0);
    pidfile::signal_reload(pid)?;
    let deadline = Instant::now() + wait;
    loop {
        if let Some(o) = read_outcome(state_dir).filter(|o| o.pid == pid && o.seq > before) {
            return Ok(o);
        }
        if Instant::now() >= deadline {
            return Err(RelayError::Reload(format!(
                "relay {pid} was signalled but wrote no outcome to {} within {}; see its log",
                outcome_path(state_dir).display(),
                humantime::format_duration(wait)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
