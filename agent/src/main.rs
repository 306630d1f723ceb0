//! `agent`: parses the command line and calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use agent::connect::Reporter;
use agent::{ConnectOptions, TransportChoice};
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use relay::logging::{self, LogFormat};
use tokio_util::sync::CancellationToken;

/// Drawbridge agent: puts a local server in front of a remote relay without
/// opening a port. It dials out, keeps the tunnel alive and serves requests.
#[derive(Parser)]
#[command(name = "agent", version)]
struct Cli {
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
    Connect(ConnectArgs),
}

#[derive(Args)]
struct ConnectArgs {
    /// The relay, e.g. https://relay.example.com. Omit it to run an embedded
    /// relay on this machine.
    #[arg(long)]
    relay: Option<url::Url>,
    /// The agent token (from `relay token create --owner EMAIL`).
    #[arg(long, env = "DRAWBRIDGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Extra CA certificate to trust (the relay's <state-dir>/ca.pem when it
    /// uses --self-signed).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// The route to serve: https://<relay>/mcp/<route>.
    #[arg(long, default_value = "demo")]
    route: String,
    /// The local HTTP server to serve the route from, e.g. http://127.0.0.1:8000/mcp.
    #[arg(long)]
    http: String,
    /// Tunnel transport.
    #[arg(long, value_enum, default_value_t = TransportChoice::Auto)]
    transport: TransportChoice,
    /// How long in-flight requests may take to finish on Ctrl-C.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// On a TCP tunnel (auto mode), how often to try QUIC again.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    quic_retry_interval: Duration,
    /// Embedded relay only: where it listens.
    #[arg(long, default_value = "127.0.0.1:7443", conflicts_with = "relay")]
    listen: SocketAddr,
    /// Embedded relay only: where it keeps its state.
    #[arg(long, conflicts_with = "relay")]
    state_dir: Option<PathBuf>,
}

struct Printer;

impl Reporter for Printer {
    fn live(&self, route: &str, url: &str, transport: tunnel::Transport) {
        println!("route {route} is live at {url} (via {transport})");
    }

    fn reconnecting(&self, reason: &str, delay: Duration) {
        tracing::warn!("{reason}; reconnecting in {delay:.1?}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Connect(args) => connect(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(args: ConnectArgs) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    let mut embedded = None;
    let (relay_url, token, ca_cert) = match args.relay {
        Some(url) => {
            let token = args.token.context(
                "no agent token: pass --token or set DRAWBRIDGE_TOKEN (create one on the relay with `relay token create --owner EMAIL`)",
            )?;
            (url, token, args.ca_cert)
        }
        None => {
            let dir = args
                .state_dir
                .unwrap_or_else(agent::embedded::default_state_dir);
            let e = agent::embedded::start(args.listen, &dir)
                .await
                .with_context(|| format!("cannot start the embedded relay on {}", args.listen))?;
            let url = url::Url::parse(&e.relay.public_url).context("embedded relay URL")?;
            println!(
                "embedded relay running at {} (state in {})",
                e.relay.public_url,
                dir.display()
            );
            println!("  trust its CA:  {}", e.ca_path.display());
            println!("  client token:  {}", e.client_token);
            println!(
                "  try:           curl --cacert {} -H 'Authorization: Bearer {}' {}/mcp/{}",
                e.ca_path.display(),
                e.client_token,
                e.relay.public_url,
                args.route
            );
            let out = (url, e.agent_token.clone(), Some(e.ca_path.clone()));
            embedded = Some(e);
            out
        }
    };
    let opts = ConnectOptions {
        relay: relay_url,
        token,
        ca_cert,
        route: args.route,
        upstream: args.http,
        transport: args.transport,
        drain_timeout: args.drain_timeout,
        quic_retry_interval: args.quic_retry_interval,
    };
    let result = agent::run(opts, stop, Arc::new(Printer)).await;
    if let Some(e) = embedded {
        e.relay.shutdown().await;
    }
    result?;
    Ok(())
}

/// First Ctrl-C (or SIGTERM): drain and leave. Second: leave now.
async fn stop_on_signal(stop: CancellationToken) {
    relay::signals::stop_requested().await;
    eprintln!("agent: stopping (draining in-flight requests; press Ctrl-C again to quit now)");
    stop.cancel();
    relay::signals::stop_requested().await;
    eprintln!("agent: quitting now");
    std::process::exit(130);
}
