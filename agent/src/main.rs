//! `agent`: parses the command line and calls the library ([`agent::cli`]).

use std::process::ExitCode;

use agent::cli::Cli;
use clap::{CommandFactory as _, FromArgMatches as _};

/// mimalloc, not the system allocator: an exchange allocates and frees many
/// small buffers (frames, JSON, the policy's context), and mimalloc's
/// per-thread free lists cost less CPU per request than glibc's (bench:
/// more requests/s at 64 in flight, lower latency at 1). The relay keeps
/// glibc's: with mimalloc it held ~5 KiB more per idle agent (36.3 against
/// 31.3 KiB, `bench --scenarios scale`), past the 32 KiB it may cost.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
