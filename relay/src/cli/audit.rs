//! `relay audit`: the audit trail shown, or its hash chain checked.

use std::path::PathBuf;

use clap::Subcommand;

use super::state_dir::{StateDir, StoreArgs};
use crate::cli::admin;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chain: every line names the hash of the
    /// line before it. Prints the first line that was changed, removed,
    /// inserted or reordered and exits 1; exits 0 when the chain is intact.
    /// Lines removed from the end are found through <state-dir>/audit.head.
    /// Checks this node's local files only (on a cluster, run it on each
    /// node), never the database's copy.
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
    store: StoreArgs,
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
    if store.database.database_url.is_some() {
        return show_cluster(&store, route, since, decision, json);
    }
    let query = crate::audit::Query {
        route,
        since,
        decision,
    };
    let dir = store.path();
    let (events, bad) = crate::audit::read_all(&dir, &query)?;
    print!("{}", admin::format_audit(&events, json));
    if bad > 0 {
        eprintln!("warning: {bad} line(s) of the audit files in {} are not audit events (a torn write after a crash?)", dir.display());
    }
    Ok(())
}

/// `relay audit --database-url`: the cluster's events, from the table the
/// nodes ship their logs to.
fn show_cluster(
    args: &StoreArgs,
    route: Option<String>,
    since: Option<std::time::SystemTime>,
    decision: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let store = super::state_dir::open(args)?;
    let filter = ::store::AuditFilter {
        route,
        decision,
        since_ms: since
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64),
    };
    let rows = super::state_dir::block_on(store.audit_events(&filter))?;
    let mut events = Vec::with_capacity(rows.len());
    let mut bad = 0;
    for row in rows {
        match serde_json::from_str::<crate::audit::AuditEvent>(&row.line) {
            Ok(event) => events.push((row.node, event)),
            Err(_) => bad += 1,
        }
    }
    print!("{}", admin::format_cluster_audit(&events, json));
    if bad > 0 {
        eprintln!("warning: {bad} row(s) of the database's audit_events are not audit events");
    }
    Ok(())
}
