//! `relay config check`: a config file checked without starting.

use std::path::PathBuf;

use clap::Subcommand;

use crate::config::file::ConfigFile;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check FILE without starting: syntax, keys, values, and the files it
    /// names (the TLS certificate and key must parse, the policy must
    /// compile). Prints a one-line summary, or the error with its line.
    Check { file: PathBuf },
}

/// Runs a `relay config` command.
pub fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Check { file } => {
            println!("{}", ConfigFile::check(&file)?.summary());
            Ok(())
        }
    }
}
