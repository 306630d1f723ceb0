//! `agent`: parses the command line and calls the library ([`agent::cli`]).

use std::process::ExitCode;

use agent::cli::Cli;
use clap::{CommandFactory as _, FromArgMatches as _};

fn main() -> ExitCode {
    // A stdio child being started (see agent::orphan_guard): no CLI,
    // no runtime, just exec.
    if let Some(code) = agent::orphan_guard::run_if_requested() {
        return ExitCode::from(code);
    }
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    agent::cli::run(cli, &matches)
}
