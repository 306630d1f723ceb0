//! The `relay` command line: its flags and one module per command, each
//! named after it. `main.rs` only parses the arguments and calls [`run`].

mod admin;
mod audit;
mod config;
mod reload;
mod route;
mod serve;
pub(crate) mod table;
mod token;
mod tools;
mod user;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, Parser, Subcommand};

use crate::config::state_dir::{self, StateDir};
use crate::logging::{self, LogFormat};
use audit::AuditCommand;
use config::ConfigCommand;
use route::RouteCommand;
use serve::ServeArgs;
use token::TokenCommand;
use tools::ToolsCommand;
use user::UserCommand;

/// Drawbridge relay: the public end of the tunnel. Terminates TLS, checks every
/// request's token and streams it to the agent serving the route. Also the
/// OAuth 2.1 authorization server MCP clients sign in with (local accounts).
#[derive(Parser)]
#[command(name = "relay", version)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTPS and the agent tunnel (QUIC on UDP, TLS on TCP) on one port.
    Serve(Box<ServeArgs>),
    /// Create, list, revoke and rotate agent and client tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List and release route claims.
    #[command(subcommand)]
    Route(RouteCommand),
    /// Local accounts that sign in to MCP clients through the relay's OAuth
    /// pages (the email is the identity policy and audit see).
    #[command(subcommand)]
    User(UserCommand),
    /// Tool pins (rug-pull defence): each route's tools are pinned when first
    /// listed; a tool whose definition changes is hidden and its calls are
    /// refused until the change is approved.
    #[command(subcommand)]
    Tools(ToolsCommand),
    /// Reload a running relay's policy (--policy) and certificate files
    /// (--tls-cert, --tls-key), as SIGHUP does. Signals the relay whose pid
    /// is in <state-dir>/relay.pid and waits for the outcome it writes to
    /// <state-dir>/reload.json: exit 0 when everything was reloaded, 1 when
    /// something was refused (a policy that does not validate, a
    /// certificate that cannot be read; the relay keeps the old one).
    /// Connected agents and requests in flight are not disturbed.
    Reload {
        #[command(flatten)]
        state: StateDir,
        /// How long to wait for the relay's answer.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },
    /// Check a config file for `relay serve --config`.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show the audit trail (<state-dir>/audit.jsonl and the rotated
    /// audit-<seq>.jsonl files): one event per message. With --database-url,
    /// the whole cluster's trail instead: the events every node shipped to
    /// the database's audit_events table, with the node each came from.
    /// `relay audit verify` checks a node's hash chain (its local files).
    Audit {
        #[command(subcommand)]
        verify: Option<AuditCommand>,
        #[command(flatten)]
        store: state_dir::StoreArgs,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// Only events since this long ago (e.g. 1h) or this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only `allow` or `deny`.
        #[arg(long)]
        decision: Option<String>,
        /// The raw JSON lines.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command `cli` that was parsed from `matches`; the process's exit
/// code (an error is printed on stderr).
pub fn run(cli: Cli, matches: &ArgMatches) -> ExitCode {
    let given = |id: &str| given(matches, id);
    for (id, flag, instead) in [
        (
            "oidc_client_secret",
            "--oidc-client-secret",
            "DRAWBRIDGE_OIDC_CLIENT_SECRET or the config file's oauth.oidc_client_secret",
        ),
        (
            "github_client_secret",
            "--github-client-secret",
            "DRAWBRIDGE_GITHUB_CLIENT_SECRET or the config file's oauth.github_client_secret",
        ),
    ] {
        let serve = matches.subcommand_matches("serve");
        if serve.and_then(|m| m.value_source(id)) == Some(ValueSource::CommandLine) {
            eprintln!(
                "relay: {}",
                crate::secret_file::command_line_warning(flag, instead)
            );
        }
    }
    if database_password_on_command_line(matches) {
        eprintln!(
            "relay: {}",
            crate::secret_file::command_line_warning(
                "a password in --database-url",
                "DRAWBRIDGE_DATABASE_URL (or for `relay serve`, the config file's database.url)",
            )
        );
    }
    // `serve` sets up logging once it has read its config file.
    if !matches!(cli.command, Command::Serve(_)) {
        logging::init(cli.log_format);
    }
    let result = run_command(cli.command, cli.log_format, &given);
    // Every log line out before the last words and the exit.
    common::lines::flush(common::lines::Stream::Stderr);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the command's `--database-url` came from the command line and
/// holds a password (as `postgres://user:PASSWORD@…` or `?password=…`).
fn database_password_on_command_line(matches: &ArgMatches) -> bool {
    let mut leaf = matches;
    while let Some((_, m)) = leaf.subcommand() {
        leaf = m;
    }
    if !leaf.ids().any(|id| id == "database_url")
        || leaf.value_source("database_url") != Some(ValueSource::CommandLine)
    {
        return false;
    }
    let Ok(Some(url)) = leaf.try_get_one::<crate::config::oauth::Secret>("database_url") else {
        return false;
    };
    url::Url::parse(url.expose())
        .is_ok_and(|u| u.password().is_some() || u.query_pairs().any(|(k, _)| k == "password"))
}

/// Whether flag `id` (of `relay serve`, or global) came from the command
/// line or the environment (which win over the config file) rather than
/// from its default.
fn given(matches: &ArgMatches, id: &str) -> bool {
    let m = matches.subcommand_matches("serve").unwrap_or(matches);
    matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

fn run_command(
    command: Command,
    log_format: LogFormat,
    given: &dyn Fn(&str) -> bool,
) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve::serve(*args, log_format, given),
        Command::Config(command) => config::run(command),
        Command::Reload { state, wait } => reload::run(state, wait),
        Command::Token(command) => token::run(command),
        Command::Audit {
            verify: Some(AuditCommand::Verify { state, files }),
            ..
        } => audit::verify(state, files),
        Command::Audit {
            verify: None,
            store,
            route,
            since,
            decision,
            json,
        } => audit::show(store, route, since, decision, json),
        Command::User(command) => user::run(command),
        Command::Tools(command) => tools::run(command),
        Command::Route(command) => route::run(command),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// The keys of a table of the config file (`None`: the top level), as
    /// its error for an unknown key lists them.
    fn file_keys(table: Option<&str>) -> Vec<String> {
        let text = match table {
            None => "zzz = 0".to_owned(),
            Some(t) => format!("[{t}]\nzzz = 0"),
        };
        let e =
            toml::from_str::<crate::config::settings::Settings>(&text).expect_err("zzz is unknown");
        let message = e.message().to_owned();
        // "expected one of `a`, `b`, `c`", or "expected `a` or `b`".
        let (_, expected) = message
            .split_once("expected one of ")
            .or_else(|| message.find("expected `").map(|i| ("", &message[i + 9..])))
            .expect(&message);
        expected
            .split(", ")
            .flat_map(|k| k.split(" or "))
            .map(|k| k.trim_matches('`').to_owned())
            .collect()
    }

    /// Every `relay serve` flag has a key in the config file (its id, the
    /// key in its table as `<table>_<key>`, or `quic` for `--no-quic`), and
    /// every key stands for a flag (`log_format` for the global
    /// `--log-format`, which `serve` has too).
    #[test]
    fn every_serve_flag_has_a_config_key() {
        let mut cli = Cli::command();
        cli.build();
        let serve = cli.find_subcommand("serve").expect("serve");
        let mut flags: Vec<String> = serve
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_long().is_some())
            .map(|a| a.get_id().to_string())
            .filter(|id| !["config", "help"].contains(&id.as_str()))
            .collect();
        let mut keys = Vec::new();
        for key in file_keys(None) {
            let inner =
                toml::from_str::<crate::config::settings::Settings>(&format!("[{key}]\nzzz = 0"));
            if inner.is_err_and(|e| e.message().starts_with("unknown field")) {
                keys.extend(
                    file_keys(Some(&key))
                        .into_iter()
                        .map(|k| (Some(key.clone()), k)),
                );
            } else {
                keys.push((None, key));
            }
        }
        for (table, key) in &keys {
            let ids = [
                key.clone(),
                format!("{}_{key}", table.as_deref().unwrap_or_default()),
                format!("no_{key}"),
            ];
            let Some(at) = flags.iter().position(|f| ids.contains(f)) else {
                panic!("no flag for the key {table:?} {key}; flags left: {flags:?}");
            };
            flags.remove(at);
        }
        assert!(flags.is_empty(), "flags without a config key: {flags:?}");
    }
}
