//! `relay tools`: tool pins (rug-pull defence).

use std::fmt::Write as _;

use clap::Subcommand;
use serde_json::Value;

use super::state_dir::{block_on, open, StoreArgs};
use super::table::{Column, Table};
use crate::error::RelayError;
use crate::gateway::pins::short;
use crate::store::{now, Store};

#[derive(Subcommand)]
pub enum ToolsCommand {
    /// Show a route's pinned tools: hash prefix, when pinned, pending change.
    List {
        #[command(flatten)]
        state: StoreArgs,
        /// The route.
        #[arg(long)]
        route: String,
        /// One JSON object per tool, with full hashes and definitions.
        #[arg(long)]
        json: bool,
    },
    /// Approve pending tool changes of a route: the new definitions become
    /// the pins (audited). Takes effect at once on a running relay.
    Approve {
        #[command(flatten)]
        state: StoreArgs,
        /// The route.
        #[arg(long)]
        route: String,
        /// Only this tool (default: every pending change of the route).
        #[arg(long)]
        tool: Option<String>,
    },
}

/// Runs a `relay tools` command.
pub fn run(command: ToolsCommand) -> anyhow::Result<()> {
    match command {
        ToolsCommand::List { state, route, json } => {
            let store = open(&state)?;
            print!("{}", block_on(list(&store, &route, json))?);
            Ok(())
        }
        ToolsCommand::Approve { state, route, tool } => {
            let store = open(&state)?;
            print!(
                "{}",
                block_on(crate::gateway::pins::approve(
                    &store,
                    &state.path(),
                    &route,
                    tool.as_deref()
                ))?
            );
            Ok(())
        }
    }
}

fn ago(t: i64, now: i64) -> String {
    let d = std::time::Duration::from_secs((now - t).max(0) as u64);
    let human = humantime::format_duration(d).to_string();
    let human: Vec<&str> = human.split(' ').take(2).collect();
    format!("{} ago", human.join(" "))
}

/// `relay tools list --route R`: the pinned tools of a route, the prefix of
/// their hash, when they were pinned, and their pending changes. With
/// `json`, one object per line with the full hashes and definitions.
pub async fn list(store: &Store, route: &str, json: bool) -> Result<String, RelayError> {
    let pins = store.tool_pins(route).await?;
    let mut out = String::new();
    if json {
        for p in pins {
            let parse = |d: &str| serde_json::from_str::<Value>(d).unwrap_or(Value::Null);
            let v = serde_json::json!({
                "route": route,
                "tool": p.tool,
                "hash": p.hash,
                "pinned_at": p.pinned_at,
                "definition": parse(&p.definition),
                "pending": p.pending.map(|c| serde_json::json!({
                    "hash": c.hash,
                    "since": c.since,
                    "definition": parse(&c.definition),
                })),
            });
            let _ = writeln!(out, "{v}");
        }
        return Ok(out);
    }
    if pins.is_empty() {
        if store.route_owner(route).await?.is_none() {
            return Err(RelayError::Config(format!(
                "no route named '{route}' on this relay (see `relay route list`)"
            )));
        }
        let _ = writeln!(
            out,
            "no tools pinned on route '{route}' yet (tools are pinned when a tools/list answer first passes the relay)"
        );
        return Ok(out);
    }
    let now = now();
    let mut table = Table::new([
        Column::left("TOOL", 32),
        Column::left("HASH", 12),
        Column::left("PINNED", 16),
        Column::rest("PENDING CHANGE"),
    ]);
    for p in pins {
        let pending = match &p.pending {
            Some(c) => format!("{} (seen {})", short(&c.hash), ago(c.since, now)),
            None => "-".into(),
        };
        table.row([
            p.tool.clone(),
            short(&p.hash).to_owned(),
            ago(p.pinned_at, now),
            pending,
        ]);
    }
    Ok(table.to_string())
}
