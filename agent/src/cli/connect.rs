//! `agent connect`: the flags, the upstream and the relay they choose, and
//! the tunnel run until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::tui::TuiView;
use crate::account::credentials::{relay_key, Credentials};
use crate::gate::OwnerPolicy;
use crate::inspector::approval::ApproveMode;
use crate::inspector::{Inspector, InspectorOptions};
use crate::report::{live_line, Reporter, RequestLine};
use crate::tunnel::connect::ConnectOptions;
use crate::tunnel::dial::TransportChoice;
use crate::upstream::sqlite::db::{Limits, SqliteDb};
use crate::upstream::stdio::StdioLimits;
use crate::upstream::Upstream;

#[derive(Args)]
#[command(group = clap::ArgGroup::new("upstream").required(true).multiple(false))]
pub struct ConnectArgs {
    /// The relay, e.g. https://relay.example.com. Omit it to run an embedded
    /// relay on this machine.
    #[arg(long)]
    relay: Option<url::Url>,
    /// The agent token (from `relay token create --owner EMAIL`). Default:
    /// the credential `agent login --relay URL` stored for this relay.
    /// Better given in the environment (DRAWBRIDGE_TOKEN) or a file
    /// (--token-file): on the command line every user of the machine can
    /// read it (ps).
    #[arg(long, env = "DRAWBRIDGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file whose first line is the agent token (keep it 0600).
    #[arg(
        long,
        env = "DRAWBRIDGE_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "token"
    )]
    token_file: Option<PathBuf>,
    /// Extra CA certificate to trust (the relay's <state-dir>/ca.pem when it
    /// uses --self-signed).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// The route to serve: https://<relay>/mcp/<route>.
    #[arg(long, default_value = "demo")]
    route: String,
    /// The local HTTP server to serve the route from, e.g. http://127.0.0.1:8000/mcp.
    #[arg(long, group = "upstream", value_name = "URL")]
    http: Option<String>,
    /// Serve the route from the built-in SQLite MCP server on this database
    /// file (created with sample data if it does not exist).
    #[arg(long, group = "upstream", value_name = "FILE")]
    sqlite: Option<PathBuf>,
    /// With --sqlite: the time one query may run (and wait for a
    /// connection, reading or writing); past it the query is stopped and the
    /// call is an error.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    sqlite_timeout: Duration,
    /// With --sqlite: the most rows one query may return; a query that
    /// returns more is an error (the caller adds a LIMIT).
    #[arg(long, default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    sqlite_max_rows: u32,
    /// With --sqlite: the longest string or blob (and row) SQLite may make
    /// or read (SQLITE_LIMIT_LENGTH): `SELECT zeroblob(1e8)` is refused
    /// before it allocates.
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1024..=i32::MAX as i64))]
    sqlite_max_value_bytes: u32,
    /// With --sqlite: the largest answer (rows as JSON) one call may build.
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1024..))]
    sqlite_max_answer_bytes: u64,
    /// With --sqlite: reading connections, so that a slow read does not hold
    /// back the others (writes run one at a time on their own connection).
    /// One caller holds at most half of them at once.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    sqlite_readers: u32,
    /// With --sqlite: the most tool calls one identity may have in flight at
    /// once; more are refused at once with a tool error.
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    sqlite_max_calls_per_identity: u32,
    /// With --sqlite: the most MCP sessions one identity may hold at once
    /// (a session ends on DELETE or after 5 minutes idle); one more
    /// initialize ends that identity's oldest session (its client gets 404
    /// and starts a new one).
    #[arg(long, default_value_t = 32, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    sqlite_max_sessions_per_identity: u32,
    /// Serve the route from a stdio MCP server: everything after `--` is the
    /// command and its arguments, e.g. `-- uvx mcp-server-sqlite --db-path
    /// demo.db`. Each MCP session gets its own child process; stateless
    /// (2026-07-28) clients share one that the agent initializes itself. The
    /// child's stderr goes to this log.
    #[arg(last = true, group = "upstream", value_name = "CMD ARGS", num_args = 1..)]
    command: Vec<String>,
    /// With `-- CMD`: stop a session's child after this long without
    /// requests (an open GET stream counts as activity).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// With `-- CMD`: the most MCP sessions (each its own child process) at
    /// once; an initialize beyond gets 503.
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_sessions: usize,
    /// With `-- CMD`: the most MCP sessions one identity may hold at once,
    /// so that one caller cannot take every --max-sessions slot; an
    /// initialize beyond gets 429.
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_sessions_per_identity: u32,
    /// With `-- CMD`: stop a session's child if the session makes no
    /// request this long after its initialize.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    unused_session_timeout: Duration,
    /// The local server at --http is not an MCP server: forward plain HTTP
    /// (bodies are not read; each request is authorized as a whole).
    #[arg(long, requires = "http", conflicts_with = "sqlite")]
    plain_http: bool,
    /// Also let this person use the route (EMAIL), or everybody with an
    /// email at this domain (@DOMAIN). Repeatable. Default: only the owner
    /// (the owner of the agent token).
    #[arg(long, value_name = "EMAIL|@DOMAIN", conflicts_with = "policy")]
    allow: Vec<String>,
    /// The only tools anybody (the owner too) may call, comma-separated.
    #[arg(long, value_name = "TOOL,...", value_delimiter = ',', num_args = 0..)]
    #[arg(conflicts_with = "policy")]
    tools: Option<Vec<String>>,
    /// The only resources anybody (the owner too) may read: URIs,
    /// comma-separated, where `*` matches any run of characters
    /// (`memo://*`). Default: every resource.
    #[arg(long, value_name = "URI-PATTERN,...", value_delimiter = ',', num_args = 0..)]
    #[arg(conflicts_with = "policy")]
    resources: Option<Vec<String>>,
    /// The only prompts anybody (the owner too) may get: names,
    /// comma-separated, `*` as in --resources. Default: every prompt.
    #[arg(long, value_name = "NAME-PATTERN,...", value_delimiter = ',', num_args = 0..)]
    #[arg(conflicts_with = "policy")]
    prompts: Option<Vec<String>>,
    /// Read-only for everybody: SQL must only read, whatever the tool is
    /// called, and only tools known to read may be called. With --sqlite the
    /// database is also opened read-only.
    #[arg(long)]
    read_only: bool,
    /// The route's full Cedar policy instead of --allow/--tools (see
    /// deploy/policies/ for examples). Checked against the schema at start.
    #[arg(long, value_name = "FILE.cedar")]
    policy: Option<PathBuf>,
    /// Print the Cedar policy the flags compile to, and exit.
    #[arg(long)]
    print_policy: bool,
    /// The largest JSON-RPC request body the agent reads to decide it.
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    max_body: usize,
    /// The largest answer a local MCP server (--http without --plain-http)
    /// may send: a JSON answer as a whole, an event stream event by event.
    /// Over it the answer is cut off and the client gets an error.
    #[arg(long, default_value_t = 64 * 1024 * 1024, value_name = "BYTES")]
    max_response: u64,
    /// Approve tool definitions that changed since the relay pinned them:
    /// while this agent serves the route, the relay pins the tools it lists
    /// anew instead of hiding the changed ones (see `relay tools`).
    #[arg(long)]
    accept_tool_changes: bool,
    /// Tunnel transport.
    #[arg(long, value_enum, default_value_t = TransportChoice::Auto)]
    transport: TransportChoice,
    /// How long in-flight requests may take to finish on Ctrl-C.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// On a TCP tunnel (auto mode), how often to try QUIC again.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    quic_retry_interval: Duration,
    /// With a relay that runs as several nodes: hold a session to each of
    /// up to N of them (each with its own back-off), so that every node
    /// serves the route without forwarding. 1: only the relay's address.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    relay_connections: u16,
    /// Serve a live page of this agent's exchanges (who asked, which tool,
    /// the SQL, which rules decided, what came back, how long it took) on
    /// ADDR (default 127.0.0.1:4040; the next free port if taken). Prints
    /// `inspector: http://ADDR/?token=SECRET`; the page and its API
    /// (/api/exchanges, /api/events) answer 401 without that per-run secret.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::inspector::DEFAULT_ADDR)]
    inspect: Option<SocketAddr>,
    /// Let --inspect listen on a non-loopback address (the page shows
    /// request bodies and SQL: anybody who can reach it and has the secret
    /// sees them).
    #[arg(long, requires = "inspect")]
    inspect_allow_remote: bool,
    /// With --inspect: how many exchanges the page keeps (in memory only;
    /// the oldest go first).
    #[arg(long, default_value_t = 500, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    inspect_history: u32,
    /// With --inspect: how many bytes of each request and response body are
    /// kept (the rest is cut, its size shown).
    #[arg(long, default_value_t = 16 * 1024, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(256..=16 * 1024 * 1024))]
    inspect_body_limit: u32,
    /// With --inspect: tool calls that wait for your Approve or Deny on the
    /// inspector page (or `POST /api/exchanges/ID/approve|deny`, or y/n in
    /// this terminal when no page is open): `writes`
    /// (SQL that is not read-only, as the policy reads it), `all` (every
    /// tool call) or `off`.
    #[arg(long, value_enum, default_value_t = ApproveMode::Off, requires = "inspect")]
    approve: ApproveMode,
    /// With --approve: how long a call waits for you; then it is denied with
    /// a JSON-RPC error saying so.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    approve_timeout: Duration,
    /// How the agent shows the requests it serves: `line`, one line per
    /// request on stdout, or `tui`, a live list in the terminal (q stops the
    /// agent; logs still go to stderr, so redirect it: 2>agent.log).
    #[arg(long, value_enum, default_value_t = View::Line)]
    view: View,
    /// Embedded relay only: where it listens.
    #[arg(long, default_value = "127.0.0.1:7443", conflicts_with = "relay")]
    #[cfg_attr(not(feature = "embedded-relay"), allow(dead_code))]
    listen: SocketAddr,
    /// Embedded relay only: where it keeps its state.
    #[arg(long, conflicts_with = "relay")]
    #[cfg_attr(not(feature = "embedded-relay"), allow(dead_code))]
    state_dir: Option<PathBuf>,
}

impl ConnectArgs {
    /// `--view tui`.
    pub fn wants_tui(&self) -> bool {
        self.view == View::Tui
    }
}

/// `--view`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum View {
    /// One line per request on stdout.
    Line,
    /// A live list in the terminal (ratatui).
    Tui,
}

/// The live line on stdout. (Its log lines keep the `agent` target of the
/// binary they were written by before the command line moved here.)
struct Printer;

impl Reporter for Printer {
    fn live(&self, route: &str, url: &str, transport: tunnel::Transport) {
        // After the request lines handed over before it.
        common::lines::flush(common::lines::Stream::Stdout);
        println!("route {route} is live at {url} (via {transport})");
    }

    fn reconnecting(&self, reason: &str, delay: Duration) {
        tracing::warn!(target: "agent", "{reason}; reconnecting in {delay:.1?}");
    }

    fn request(&self, line: &RequestLine) {
        crate::inspector::prompt::print_line(&live_line(line, std::time::SystemTime::now()));
    }
}

/// `agent connect` without --relay, in an agent built without the embedded relay.
#[cfg(not(feature = "embedded-relay"))]
const NO_EMBEDDED_RELAY: &str = "pass --relay URL: this agent was built without the embedded relay (cargo feature `embedded-relay`), which `agent connect` runs when --relay is omitted";

pub async fn connect(args: ConnectArgs, view: Option<TuiView>) -> anyhow::Result<()> {
    let policy = match &args.policy {
        Some(path) => {
            if args.read_only {
                tracing::info!(target: "agent", "--read-only with --policy: the database opens read-only; the policy file decides the rest");
            }
            OwnerPolicy::from_file(path)?
        }
        None => OwnerPolicy::from_owner_flags(
            &args.allow,
            args.tools.as_deref(),
            args.resources.as_deref(),
            args.prompts.as_deref(),
            args.read_only,
        )?,
    };
    if args.print_policy {
        print!("{}", policy.cedar_text());
        return Ok(());
    }
    #[cfg(not(feature = "embedded-relay"))]
    anyhow::ensure!(args.relay.is_some(), NO_EMBEDDED_RELAY);
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    let upstream = match (&args.http, &args.sqlite, args.command.split_first()) {
        (Some(url), _, _) if args.plain_http => Upstream::http(url)?,
        (Some(url), _, _) => Upstream::http_mcp(url, args.max_response)?,
        (None, None, Some((program, rest))) => {
            crate::upstream::stdio::orphan_guard::enable();
            Upstream::stdio(
                program.clone(),
                rest.to_vec(),
                &args.route,
                StdioLimits {
                    idle_timeout: args.idle_timeout,
                    max_sessions: args.max_sessions,
                    max_sessions_per_identity: args.max_sessions_per_identity as usize,
                    unused_timeout: args.unused_session_timeout,
                },
                stop.clone(),
            )?
        }
        (None, Some(path), _) => {
            let limits = Limits {
                max_rows: args.sqlite_max_rows as usize,
                timeout: args.sqlite_timeout,
                max_value_bytes: args.sqlite_max_value_bytes as usize,
                max_answer_bytes: usize::try_from(args.sqlite_max_answer_bytes)
                    .unwrap_or(usize::MAX),
                readers: args.sqlite_readers as usize,
                max_calls_per_identity: args.sqlite_max_calls_per_identity as usize,
                max_sessions_per_identity: args.sqlite_max_sessions_per_identity as usize,
            };
            let db = SqliteDb::open(path, args.read_only, limits)?;
            if db.created_sample() {
                println!(
                    "created {} with sample data (tables customers, products, orders)",
                    path.display()
                );
            }
            Upstream::sqlite(db, stop.clone())
        }
        (None, None, None) => anyhow::bail!("pass --http URL, --sqlite FILE or -- CMD ARGS..."),
    };
    #[cfg(feature = "embedded-relay")]
    let mcp = !matches!(upstream, Upstream::Http(_));
    let upstream = Arc::new(upstream);
    #[cfg(feature = "embedded-relay")]
    let mut embedded = None;
    let token = match (args.token, &args.token_file) {
        (Some(t), _) => Some(t),
        (None, Some(file)) => Some(common::secret_file::read(file)?),
        (None, None) => None,
    };
    let (relay_url, token, ca_cert) = match args.relay {
        Some(url) => match token {
            Some(token) => (url, token, args.ca_cert),
            None => {
                let stored = Credentials::default_location()?.get(&url)?;
                let c = stored.with_context(|| {
                    format!(
                        "no agent credential for {}: run `agent login --relay {}` (or set DRAWBRIDGE_TOKEN / pass --token-file)",
                        relay_key(&url),
                        relay_key(&url)
                    )
                })?;
                (url, c.token, args.ca_cert.or(c.ca_cert))
            }
        },
        #[cfg(feature = "embedded-relay")]
        None => {
            let dir = args
                .state_dir
                .unwrap_or_else(crate::tunnel::embedded::default_state_dir);
            let e = crate::tunnel::embedded::start(args.listen, &dir)
                .await
                .with_context(|| format!("cannot start the embedded relay on {}", args.listen))?;
            let url = url::Url::parse(&e.relay.public_url).context("embedded relay URL")?;
            println!(
                "embedded relay running at {} (state in {})",
                e.relay.public_url,
                dir.display()
            );
            let route_url = format!("{}/mcp/{}", e.relay.public_url, args.route);
            let ca = e.ca_path.display();
            let token = &e.client_token;
            println!("  trust its CA:  {ca}");
            println!("  client token:  {token}");
            if mcp {
                println!("  MCP server:    {route_url} (Streamable HTTP)");
                println!(
                    "  in a client:   server URL {route_url}, header 'Authorization: Bearer {token}', trusting the CA above (Node.js clients: NODE_EXTRA_CA_CERTS={ca})"
                );
                println!(
                    "  try:           curl --cacert {ca} -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{{}},\"clientInfo\":{{\"name\":\"curl\",\"version\":\"1\"}}}}}}' {route_url}"
                );
            } else {
                println!("  try:           curl --cacert {ca} -H 'Authorization: Bearer {token}' {route_url}");
            }
            let out = (url, e.agent_token.clone(), Some(e.ca_path.clone()));
            embedded = Some(e);
            out
        }
        #[cfg(not(feature = "embedded-relay"))]
        None => anyhow::bail!(NO_EMBEDDED_RELAY),
    };
    let tui = match args.view {
        View::Line => None,
        View::Tui => {
            use std::io::IsTerminal as _;
            anyhow::ensure!(
                std::io::stdout().is_terminal() && std::io::stdin().is_terminal(),
                "--view tui needs a terminal (stdin and stdout); use --view line"
            );
            Some(view.unwrap_or_default())
        }
    };
    let inspector = match args.inspect {
        Some(addr) => {
            let inspector = Inspector::start(&InspectorOptions {
                addr,
                allow_remote: args.inspect_allow_remote,
                history: args.inspect_history as usize,
                body_limit: args.inspect_body_limit as usize,
                approve: args.approve,
                approve_timeout: args.approve_timeout,
                terminal_prompt: args.view == View::Line && {
                    use std::io::IsTerminal as _;
                    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
                },
            })
            .await?;
            println!("inspector: {}", inspector.url());
            if let Some(view) = &tui {
                view.note(format!("inspector: {}", inspector.url()));
            }
            Some(inspector)
        }
        None => None,
    };
    let opts = ConnectOptions {
        relay: relay_url,
        token,
        ca_cert,
        route: args.route,
        upstream: upstream.clone(),
        transport: args.transport,
        drain_timeout: args.drain_timeout,
        quic_retry_interval: args.quic_retry_interval,
        relay_connections: usize::from(args.relay_connections),
        policy,
        plain_http: args.plain_http,
        max_body: args.max_body,
        accept_tool_changes: args.accept_tool_changes,
        inspector,
    };
    let (reporter, drawing): (Arc<dyn Reporter>, _) = match tui {
        Some(view) => {
            let stop = stop.clone();
            let drawer = view.clone();
            let drawing = std::thread::spawn(move || drawer.run(stop));
            (Arc::new(view), Some(drawing))
        }
        None => (Arc::new(Printer), None),
    };
    let result = crate::tunnel::connect::run(opts, stop.clone(), reporter).await;
    if let Some(drawing) = drawing {
        stop.cancel();
        match drawing.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("agent: the terminal view failed: {e}"),
            Err(_) => eprintln!("agent: the terminal view panicked"),
        }
    }
    upstream.shutdown().await;
    #[cfg(feature = "embedded-relay")]
    if let Some(e) = embedded {
        e.relay.shutdown().await;
    }
    result?;
    Ok(())
}

/// First Ctrl-C (or SIGTERM): drain and leave. Second: leave now.
async fn stop_on_signal(stop: CancellationToken) {
    common::signals::stop_requested().await;
    eprintln!("agent: stopping (draining in-flight requests; press Ctrl-C again to quit now)");
    stop.cancel();
    common::signals::stop_requested().await;
    eprintln!("agent: quitting now");
    common::lines::flush_within(common::lines::Stream::Stdout, Some(Duration::from_secs(1)));
    std::process::exit(130);
}

/// Flags that tune one kind of upstream, given (on the command line or in
/// the environment) with another: refused rather than silently ignored.
/// (clap's `requires` does not see arguments that have default values.)
pub fn flags_fit_the_upstream(m: &clap::ArgMatches) -> Result<(), String> {
    const SQLITE: &[&str] = &[
        "sqlite_timeout",
        "sqlite_max_rows",
        "sqlite_max_value_bytes",
        "sqlite_max_answer_bytes",
        "sqlite_readers",
        "sqlite_max_calls_per_identity",
        "sqlite_max_sessions_per_identity",
    ];
    const STDIO: &[&str] = &[
        "idle_timeout",
        "max_sessions",
        "max_sessions_per_identity",
        "unused_session_timeout",
    ];
    let given = |id: &str| {
        matches!(
            m.value_source(id),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        )
    };
    let flag = |id: &str| format!("--{}", id.replace('_', "-"));
    if !given("sqlite") {
        if let Some(id) = SQLITE.iter().find(|id| given(id)) {
            return Err(format!("{} applies only with --sqlite", flag(id)));
        }
    }
    if !given("command") {
        if let Some(id) = STDIO.iter().find(|id| given(id)) {
            return Err(format!(
                "{} applies only to a stdio server (-- CMD ARGS)",
                flag(id)
            ));
        }
    }
    Ok(())
}
