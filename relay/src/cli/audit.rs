//! `relay audit`: the audit trail shown, or its hash chain checked.

use std::path::PathBuf;

use clap::Subcommand;

use super::state_dir::StateDir;
use crate::cli::admin;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chain: every line names the hash of the
    /// line before it. Prints the first line that was changed, removed,
    /// inserted or reordered and exits 1; exits 0 when the chain is intact.
    /// Lines removed from the end are found through <state-dir>/audit.head.
    Verify {
        #[command(flatten)]
        state: StateDir,
        /// The files to check as one chain, oldest first. Default: every
        /// audit file of the state dir (audit-<seq>.jsonl, then audit.jsonl).
        files: Vec<PathBuf>,
    },
}

/// `relay audit verify`.
pub fn verify(state: StateDir, files: Vec<PathBuf>) -> anyhow::Result<()> {
    let report = crate::audit::verify::verify_files(&state.path(), &files)?;
    println!("{report}");
    Ok(())
}

/// `relay audit`: the events that match, as a table or JSON lines.
pub fn show(
    state: StateDir,
    route: Option<String>,
    since: Option<String>,
    decision: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let since = since
        .as_deref()
        .map(|s| {
            humantime::parse_rfc3339_weak(s)
                .or_else(|_| admin::parse_duration(s).map(|d| std::time::SystemTime::now() - d))
        })
        .transpose()?;
    let query = crate::audit::Query {
        route,
        since,
        decision,
    };
    let dir = state.path();
    let (events, bad) = crate::audit::read_all(&dir, &query)?;
    print!("{}", admin::format_audit(&events, json));
    if bad > 0 {
        eprintln!("warning: {bad} line(s) of the audit files in {} are not audit events (a torn write after a crash?)", dir.display());
    }
    Ok(())
}
