//! `relay tools`: tool pins (rug-pull defence).

use clap::Subcommand;

use super::state_dir::{block_on, open, StateDir};

#[derive(Subcommand)]
pub enum ToolsCommand {
    /// Show a route's pinned tools: hash prefix, when pinned, pending change.
    List {
        #[command(flatten)]
        state: StateDir,
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
        state: StateDir,
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
            print!("{}", block_on(crate::pins::list(&store, &route, json))?);
            Ok(())
        }
        ToolsCommand::Approve { state, route, tool } => {
            let store = open(&state)?;
            print!(
                "{}",
                block_on(crate::pins::approve(
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
