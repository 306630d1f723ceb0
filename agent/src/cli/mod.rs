//! The `agent` command line: its flags and one module per command, each
//! named after it. `main.rs` only parses the arguments and calls [`run`].

mod connect;
mod login;
mod share;
mod tui;

use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, Parser, Subcommand};
use common::logging::{self, LogFormat};

use connect::ConnectArgs;
use login::LoginArgs;
use share::ShareArgs;

/// Drawbridge agent: puts a local server in front of a remote relay without
/// opening a port. It dials out, keeps the tunnel alive and serves requests.
#[derive(Parser)]
#[command(name = "agent", version)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to a relay and serve a route from a local server. Without
    /// --relay, a relay runs inside this process on 127.0.0.1.
    Connect(Box<ConnectArgs>),
    /// Sign this agent in at a relay: prints a code and a URL; approve it in
    /// a browser, signed in to the relay. The agent credential is stored in
    /// your config directory (<config>/drawbridge/credentials.json, mode
    /// 0600), and `agent connect --relay URL` then needs no --token.
    Login(LoginArgs),
    /// Share a route you own with another person (EMAIL) or everybody at a
    /// domain (@DOMAIN): they add the printed URL to their MCP client and
    /// sign in as themselves. Also --list and --revoke ID. Uses the
    /// credential of `agent login`.
    Share(ShareArgs),
}

/// Runs the command `cli` that was parsed from `matches`; the process's exit
/// code (an error is printed on stderr).
pub fn run(cli: Cli, matches: &ArgMatches) -> ExitCode {
    if let Some(connect) = matches.subcommand_matches("connect") {
        if let Err(e) = connect::flags_fit_the_upstream(connect) {
            let mut cli = Cli::command();
            cli.build();
            let mut connect = cli.find_subcommand("connect").cloned().unwrap_or(cli);
            connect
                .error(clap::error::ErrorKind::ArgumentConflict, e)
                .exit();
        }
    }
    // `connect --view tui` draws on the terminal: while it does, log lines
    // that would go to the same terminal go to its log pane.
    let view = match &cli.command {
        Command::Connect(args) if args.wants_tui() => Some(tui::TuiView::default()),
        _ => None,
    };
    match &view {
        Some(view) if std::io::IsTerminal::is_terminal(&std::io::stderr()) => {
            logging::init_to(cli.log_format, view.log_writer(), false)
        }
        _ => logging::init(cli.log_format),
    }
    let token_on_command_line = matches
        .subcommand_matches("connect")
        .and_then(|m| m.value_source("token"))
        == Some(clap::parser::ValueSource::CommandLine);
    if token_on_command_line {
        eprintln!(
            "agent: {}",
            common::secret_file::command_line_warning(
                "--token",
                "DRAWBRIDGE_TOKEN, --token-file FILE or `agent login`"
            )
        );
    }
    // One thread for the network: the agent's work per exchange is small,
    // and handing it between threads costs more than doing it (wake-ups of
    // another core, tens of µs each on a small VM). What may take longer
    // runs on the blocking pool: database calls past a short slice
    // (`upstream::sqlite`), files, prompts on the terminal.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Connect(args) => connect::connect(*args, view).await,
            Command::Login(args) => login::login(args).await,
            Command::Share(args) => share::share(args).await,
        }
    });
    // Every live line out before the process ends.
    common::lines::flush(common::lines::Stream::Stdout);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
