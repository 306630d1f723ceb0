//! `relay route`: route claims.

use clap::Subcommand;

use super::state_dir::{block_on, open, StoreArgs};
use super::table::{Column, Table};

#[derive(Subcommand)]
pub enum RouteCommand {
    /// List claimed routes and their owners.
    List {
        #[command(flatten)]
        state: StoreArgs,
    },
    /// Release a route so that another owner may claim it.
    Release {
        #[command(flatten)]
        state: StoreArgs,
        /// The route name.
        name: String,
    },
}

/// Runs a `relay route` command.
pub fn run(command: RouteCommand) -> anyhow::Result<()> {
    match command {
        RouteCommand::List { state } => {
            let store = open(&state)?;
            let mut table = Table::new([Column::left("ROUTE", 32), Column::rest("OWNER")]);
            for (name, owner) in block_on(store.list_routes())? {
                table.row([name, owner]);
            }
            print!("{table}");
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
