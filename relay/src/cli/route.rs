//! `relay route`: route claims.

use clap::Subcommand;

use super::state_dir::{block_on, open, StateDir};

#[derive(Subcommand)]
pub enum RouteCommand {
    /// List claimed routes and their owners.
    List {
        #[command(flatten)]
        state: StateDir,
    },
    /// Release a route so that another owner may claim it.
    Release {
        #[command(flatten)]
        state: StateDir,
        /// The route name.
        name: String,
    },
}

/// Runs a `relay route` command.
pub fn run(command: RouteCommand) -> anyhow::Result<()> {
    match command {
        RouteCommand::List { state } => {
            let store = open(&state)?;
            println!("{:<32}  OWNER", "ROUTE");
            for (name, owner) in block_on(store.list_routes())? {
                println!("{name:<32}  {owner}");
            }
            Ok(())
        }
        RouteCommand::Release { state, name } => {
            let store = open(&state)?;
            if block_on(store.release_route(&name))? {
                eprintln!("released route '{name}'");
                Ok(())
            } else {
                anyhow::bail!("no route named '{name}' is claimed")
            }
        }
    }
}
