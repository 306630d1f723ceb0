//! Stdio children die with the agent, even when the agent is killed with
//! SIGKILL and has no chance to stop them.
//!
//! On Linux the agent does not start the MCP server directly. It starts
//! itself as `agent __stdio-child <agent-pid> <program> <args>…`; that
//! process asks the kernel for SIGKILL when its parent dies
//! (`PR_SET_PDEATHSIG`), checks that the parent is still the agent (it may
//! have died in between), and then `exec`s the program. The death signal
//! survives the `exec`, so the MCP server itself is killed with the agent,
//! and it keeps the pid the agent logged. This needs no `unsafe` (no
//! `pre_exec` hook), at the cost of one extra `exec` per child.
//!
//! A well-behaved server also exits on its own when its stdin closes; the
//! guard is for the ones that do not. Grandchildren the server starts itself
//! are not covered (they see their stdin close).

use std::ffi::OsString;
use std::sync::OnceLock;

/// The hidden subcommand of the `agent` binary that runs the guard.
pub const SUBCOMMAND: &str = "__stdio-child";

/// The executable that understands [`SUBCOMMAND`], once [`enable`]d.
static GUARD_EXE: OnceLock<OsString> = OnceLock::new();

/// Starts stdio children through the guard from now on. Called by the
/// `agent` binary (a library user whose executable does not know
/// [`SUBCOMMAND`] leaves it off, and children are started directly).
pub fn enable() {
    if cfg!(target_os = "linux") {
        // /proc/self/exe still works after the binary was replaced on disk
        // (an upgrade while the agent runs).
        let _ = GUARD_EXE.set(OsString::from("/proc/self/exe"));
    }
}

/// The command that starts `program args` as a stdio child.
pub fn command(program: &str, args: &[String]) -> tokio::process::Command {
    match GUARD_EXE.get() {
        Some(exe) => {
            let mut cmd = tokio::process::Command::new(exe);
            cmd.arg(SUBCOMMAND)
                .arg(std::process::id().to_string())
                .arg(program)
                .args(args);
            cmd
        }
        None => {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args);
            cmd
        }
    }
}

/// When this process was started as the guard (`argv[1]` is
/// [`SUBCOMMAND`]): becomes the MCP server, or returns the exit code to end
/// with when it cannot. `None`: this is an ordinary `agent` invocation.
/// Call first thing in `main`, before any thread is started (the death
/// signal belongs to the calling thread, which must be the one that execs).
pub fn run_if_requested() -> Option<u8> {
    let mut argv = std::env::args_os().skip(1);
    if argv.next()? != SUBCOMMAND {
        return None;
    }
    let parent = argv.next().and_then(|p| p.to_str()?.parse::<u32>().ok());
    let Some(program) = argv.next() else {
        eprintln!("agent {SUBCOMMAND}: usage: agent {SUBCOMMAND} AGENT-PID PROGRAM [ARGS...]");
        return Some(2);
    };
    let args: Vec<OsString> = argv.collect();
    Some(exec_guarded(parent, program, args))
}

#[cfg(target_os = "linux")]
fn exec_guarded(parent: Option<u32>, program: OsString, args: Vec<OsString>) -> u8 {
    use nix::sys::prctl;
    use nix::sys::signal::Signal;
    use std::os::unix::process::CommandExt as _;

    if let Err(e) = prctl::set_pdeathsig(Signal::SIGKILL) {
        eprintln!(
            "agent {SUBCOMMAND}: cannot ask to die with the agent (prctl PR_SET_PDEATHSIG): {e}"
        );
        return 126;
    }
    // The agent may have died before the death signal was armed: then
    // this process was re-parented and must not start an orphan.
    if parent.is_some_and(|p| p != std::os::unix::process::parent_id()) {
        eprintln!("agent {SUBCOMMAND}: the agent exited before the MCP server could start");
        return 1;
    }
    let err = std::process::Command::new(&program).args(&args).exec();
    eprintln!(
        "agent {SUBCOMMAND}: cannot start `{}`: {err}",
        program.to_string_lossy()
    );
    127
}

#[cfg(not(target_os = "linux"))]
fn exec_guarded(_parent: Option<u32>, program: OsString, args: Vec<OsString>) -> u8 {
    // Not reached: [`enable`] only turns the guard on for Linux.
    match std::process::Command::new(&program).args(&args).status() {
        Ok(s) => s.code().map_or(1, |c| c as u8),
        Err(e) => {
            eprintln!(
                "agent {SUBCOMMAND}: cannot start `{}`: {e}",
                program.to_string_lossy()
            );
            127
        }
    }
}
