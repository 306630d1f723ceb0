//! `relay`: parses the command line and calls the library ([`relay::cli`]).

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};
use relay::cli::Cli;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    relay::cli::run(cli, &matches)
}
