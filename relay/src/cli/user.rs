//! `relay user`: local accounts that sign in through the OAuth pages.

use anyhow::Context as _;
use clap::Subcommand;

use super::state_dir::{block_on, open, StoreArgs};
use super::table::{Column, Table};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add an account. The password is read from stdin (one line) or, on a
    /// terminal, prompted for without echo; argon2id-hashed.
    Add {
        #[command(flatten)]
        state: StoreArgs,
        /// The account's email address (its identity).
        email: String,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        state: StoreArgs,
    },
    /// Remove an account: its sessions end and its OAuth tokens are revoked.
    Remove {
        #[command(flatten)]
        state: StoreArgs,
        email: String,
    },
}

/// Runs a `relay user` command.
pub fn run(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add { state, email } => {
            let store = open(&state)?;
            let password = read_password()?;
            block_on(crate::identity::accounts::add_user(
                &store, &email, &password,
            ))?;
            eprintln!("added user {}", email.trim());
            Ok(())
        }
        UserCommand::List { state } => {
            let store = open(&state)?;
            let mut table = Table::new([Column::left("EMAIL", 40), Column::rest("ADDED")]);
            for (email, created) in block_on(store.list_users())? {
                let added =
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(created.max(0) as u64);
                table.row([email, humantime::format_rfc3339_seconds(added).to_string()]);
            }
            print!("{table}");
            Ok(())
        }
        UserCommand::Remove { state, email } => {
            let store = open(&state)?;
            block_on(store.remove_user(&email))?;
            eprintln!("removed user {email}; their sessions and OAuth tokens are revoked");
            Ok(())
        }
    }
}

/// A password from a prompt (on a terminal) or the first line of stdin.
fn read_password() -> anyhow::Result<String> {
    use std::io::IsTerminal as _;
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ").context("cannot read the password")?;
        let again = rpassword::prompt_password("again: ").context("cannot read the password")?;
        anyhow::ensure!(first == again, "the passwords differ");
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
