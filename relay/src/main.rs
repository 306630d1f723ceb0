//! `relay`: parses the command line and calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use relay::config_file::ConfigFile;
use relay::logging::{self, LogFormat};
use relay::store::Store;
use relay::token::TokenKind;
use relay::{admin, RelayConfig, TlsSource};

/// Drawbridge relay: the public end of the tunnel. Terminates TLS, checks every
/// request's token and streams it to the agent serving the route. Also the
/// OAuth 2.1 authorization server MCP clients sign in with (local accounts).
#[derive(Parser)]
#[command(name = "relay", version)]
struct Cli {
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
    /// audit-<seq>.jsonl files): one event per message. `relay audit verify`
    /// checks its hash chain.
    Audit {
        #[command(subcommand)]
        verify: Option<AuditCommand>,
        #[command(flatten)]
        state: StateDir,
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

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit log's hash chain: every line names the hash of the
    /// line before it. Prints the first line that was changed, removed,
    /// inserted or reordered and exits 1; exits 0 when the chain is intact.
    /// Lines removed from the end are found through <state-dir>/audit.head.
    Verify {
        #[command(flatten)]
        state: StateDir,
        /// The files to check as one chain, oldest first. Default: every
        /// audit file of the state dir (audit-<seq>.jsonl, then audit.jsonl).
        files: Vec<PathBuf>,
    },
}

#[derive(Args)]
struct StateDir {
    /// Where the relay keeps its state (SQLite database, certificates).
    /// Default: ~/.local/share/drawbridge/relay (the user's data dir).
    #[arg(long, env = "DRAWBRIDGE_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

impl StateDir {
    fn path(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| {
            dirs::data_local_dir()
                .map(|d| d.join("drawbridge").join("relay"))
                .unwrap_or_else(|| PathBuf::from("drawbridge-relay"))
        })
    }
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check FILE without starting: syntax, keys, values, and the files it
    /// names (the TLS certificate and key must parse, the policy must
    /// compile). Prints a one-line summary, or the error with its line.
    Check { file: PathBuf },
}

#[derive(Args)]
struct ServeArgs {
    /// A TOML file with these settings (see deploy/relay.toml); flags and
    /// environment variables given override it.
    #[arg(long, env = "DRAWBRIDGE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address for HTTPS and both tunnel transports (TCP and UDP).
    #[arg(long, default_value = "0.0.0.0:443")]
    listen: SocketAddr,
    /// How the relay names itself, e.g. https://relay.example.com.
    /// Default: https://<--acme-domain>, else https://<listen address>
    /// (https://localhost when listening on all addresses).
    #[arg(long, env = "DRAWBRIDGE_PUBLIC_URL")]
    public_url: Option<String>,
    /// PEM certificate chain.
    #[arg(long, requires = "tls_key", conflicts_with = "self_signed")]
    tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Issue a certificate from a local CA kept in the state dir; agents and
    /// clients trust <state-dir>/ca.pem. For development and private networks.
    #[arg(long)]
    self_signed: bool,
    #[command(flatten)]
    acme: AcmeArgs,
    #[command(flatten)]
    state: StateDir,
    /// Do not accept QUIC tunnels (agents use TLS over TCP).
    #[arg(long)]
    no_quic: bool,
    /// How long an agent may take to start answering a request before 504.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    response_timeout: std::time::Duration,
    /// How often agents ping; an agent silent for three intervals is dropped.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    keepalive_interval: std::time::Duration,
    /// How long in-flight requests may take to finish on shutdown.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain_timeout: std::time::Duration,
    /// Largest JSON-RPC request body, in bytes; bigger ones get 413.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_body: usize,
    /// Write tool arguments to the audit log in the clear (default: a SHA-256).
    #[arg(long)]
    audit_arguments: bool,
    /// Rotate <state-dir>/audit.jsonl when a line would take it past this
    /// many bytes (0: never): it becomes audit-<seq of its last line>.jsonl
    /// and the hash chain goes on in a new audit.jsonl. Rotated files are
    /// kept; remove old ones yourself.
    #[arg(long, value_name = "BYTES", default_value_t = relay::config::DEFAULT_AUDIT_ROTATE_SIZE)]
    audit_rotate_size: u64,
    /// The organisation's Cedar policy for every route: its forbids win over
    /// any route owner's permits (see deploy/policies/). Checked at start.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// A browser origin (https://app.example.com[:port]) allowed to call
    /// routes, besides the relay's own (--public-url) and loopback ones
    /// (http(s)://localhost, 127.0.0.1, [::1] on any port). Repeatable; '*'
    /// allows every origin. Requests without Origin (server-side clients)
    /// are always allowed; any other Origin gets 403.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// Send a keep-alive comment on an event stream idle this long (0:
    /// never), so that proxies do not close it.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    sse_keepalive: std::time::Duration,
    /// Largest tools/list answer (or resources/list, resources/templates/list,
    /// prompts/list), in bytes, the relay reads to filter it per caller; a
    /// bigger one becomes a JSON-RPC error (fail closed).
    #[arg(long, default_value_t = relay::tool_filter::DEFAULT_MAX_TOOLS_LIST)]
    max_tools_list: usize,
    /// Lifetime of the OAuth access tokens the relay issues to MCP clients.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    access_token_ttl: std::time::Duration,
    /// Lifetime of OAuth refresh tokens (each use rotates them).
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    refresh_token_ttl: std::time::Duration,
    /// How long an `agent login` code waits to be approved at /device.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    device_code_ttl: std::time::Duration,
    /// How often `agent login` may poll for its approval (faster polls get
    /// slow_down).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    device_poll_interval: std::time::Duration,
    /// Most requests to one route, from all callers together: N/s, N/min
    /// or N/h (a burst of N, then evenly spread). Over it: 429 with
    /// Retry-After. Default: unlimited.
    #[arg(long, value_name = "RATE")]
    rate_limit_route: Option<relay::rate_limits::Rate>,
    /// Most requests of one identity (a token's owner, a signed-in user),
    /// over all routes: N/s, N/min or N/h. Over it: 429 with Retry-After.
    /// Default: unlimited.
    #[arg(long, value_name = "RATE")]
    rate_limit_identity: Option<relay::rate_limits::Rate>,
    /// TCP and QUIC connections one client address may hold at once (0:
    /// unlimited); more are closed at once, before TLS.
    #[arg(long, default_value_t = 256)]
    max_connections_per_ip: u32,
    /// Route names one owner may claim (0: unlimited). An agent offering
    /// one more new name is refused with a message saying so; the routes
    /// already claimed keep working. `relay route release` frees a name.
    #[arg(long, default_value_t = 64)]
    max_routes_per_owner: u32,
    /// QUIC handshakes one address may have in progress (0: unlimited);
    /// more are refused. Bounds floods of half-open handshakes.
    #[arg(long, default_value_t = 16)]
    max_quic_handshakes_per_ip: u32,
    /// How long a client may take to send a request's headers (slowloris).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    header_read_timeout: std::time::Duration,
    /// Close a client's HTTPS connection (HTTP/2 or HTTP/1.1 keep-alive)
    /// that has had no request in flight this long (0: never). A standing
    /// event stream is a request in flight.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    http_idle_timeout: std::time::Duration,
    /// How long a client may take to send a JSON-RPC request body; after it
    /// the relay answers 408 and forwards nothing.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    body_read_timeout: std::time::Duration,
    /// Admin listener: plain HTTP with /metrics (Prometheus), /healthz and
    /// /readyz; `off` for none. It has NO authentication: keep it on
    /// loopback or a private network, never the internet.
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR|off", value_parser = parse_admin_listen)]
    admin_listen: AdminListen,
    /// Client ID metadata documents: an MCP client whose client_id is an
    /// https URL is described by the JSON document there, fetched by the
    /// relay (public addresses only, no redirects, at most 5 KiB and 5 s,
    /// cached 5 min to 24 h per its Cache-Control).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    cimd: String,
    /// Fetch client metadata documents only from DOMAIN and its subdomains.
    /// Repeatable; default: any public host.
    #[arg(long = "cimd-allow-domain", value_name = "DOMAIN")]
    cimd_allow_domains: Vec<String>,
    /// DEVELOPMENT ONLY: client metadata documents may be served from
    /// loopback addresses (other private addresses stay refused).
    #[arg(long)]
    cimd_dev_allow_loopback: bool,
    /// DEVELOPMENT ONLY: trust this CA (PEM) too when fetching client
    /// metadata documents.
    #[arg(long, value_name = "FILE")]
    cimd_ca: Option<PathBuf>,
    /// Sign-in through this OpenID Connect provider (its issuer URL; the
    /// relay reads <URL>/.well-known/openid-configuration at startup). The
    /// redirect URI to register there is <public URL>/oauth/callback/oidc.
    #[arg(long, env = "DRAWBRIDGE_OIDC_ISSUER", value_name = "URL")]
    oidc_issuer: Option<String>,
    /// The relay's client id at the OpenID Connect provider.
    #[arg(long, env = "DRAWBRIDGE_OIDC_CLIENT_ID", value_name = "ID")]
    oidc_client_id: Option<String>,
    /// The relay's client secret at the OpenID Connect provider. Better
    /// given in the environment (DRAWBRIDGE_OIDC_CLIENT_SECRET) or in the
    /// --config file (oauth.oidc_client_secret, the file kept 0600): on the
    /// command line every user of the machine can read it (ps).
    #[arg(
        long,
        env = "DRAWBRIDGE_OIDC_CLIENT_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    oidc_client_secret: Option<String>,
    /// The ID token (or userinfo) claim that lists the person's groups.
    #[arg(long, default_value = "groups", value_name = "CLAIM")]
    oidc_groups_claim: String,
    /// The provider's name on the sign-in button. Default: the issuer's host.
    #[arg(long, value_name = "NAME")]
    oidc_name: Option<String>,
    /// Sign-in with GitHub: the client id of the relay's GitHub OAuth app
    /// (its callback URL: <public URL>/oauth/callback/github). The email is
    /// the primary verified address; the groups are the person's
    /// organisations and their teams as org/team.
    #[arg(long, env = "DRAWBRIDGE_GITHUB_CLIENT_ID", value_name = "ID")]
    github_client_id: Option<String>,
    /// The GitHub OAuth app's client secret. Better given in the environment
    /// (DRAWBRIDGE_GITHUB_CLIENT_SECRET) or in the --config file
    /// (oauth.github_client_secret, the file kept 0600): on the command line
    /// every user of the machine can read it (ps).
    #[arg(
        long,
        env = "DRAWBRIDGE_GITHUB_CLIENT_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    github_client_secret: Option<String>,
    /// FOR TESTS: GitHub's web endpoints (/login/oauth/…).
    #[arg(long, hide = true, default_value = relay::oauth::github::BASE_URL)]
    github_base_url: String,
    /// FOR TESTS: GitHub's REST API.
    #[arg(long, hide = true, default_value = relay::oauth::github::API_URL)]
    github_api_url: String,
    /// DEVELOPMENT ONLY: identity providers may be reached over plain http
    /// on a loopback address.
    #[arg(long)]
    upstream_dev_allow_http_loopback: bool,
    /// FOR BENCHMARKS ONLY (bench/): no per-message policy and no audit.
    #[arg(long, hide = true)]
    bench_disable_policy_and_audit: bool,
}

/// Certificates from an ACME CA (Let's Encrypt by default), validated with
/// TLS-ALPN-01 on --listen's port (443 must be reachable from the internet).
#[derive(Args)]
struct AcmeArgs {
    /// Obtain and renew the certificate for this DNS name through ACME; it
    /// must resolve to this relay. Kept in <state-dir>/acme/. Also the
    /// default --public-url (https://DOMAIN).
    #[arg(long, value_name = "DOMAIN", env = "DRAWBRIDGE_ACME_DOMAIN", requires = "acme_email",
          conflicts_with_all = ["tls_cert", "self_signed"])]
    acme_domain: Option<String>,
    /// The ACME account's contact email. Giving it agrees to the CA's terms
    /// of service.
    #[arg(
        long,
        value_name = "EMAIL",
        env = "DRAWBRIDGE_ACME_EMAIL",
        requires = "acme_domain"
    )]
    acme_email: Option<String>,
    /// The ACME directory URL (default: Let's Encrypt's production one).
    #[arg(long, value_name = "URL", requires = "acme_domain",
          default_value = relay::AcmeConfig::LETS_ENCRYPT)]
    acme_directory: String,
    /// PEM CA certificate(s) to trust for the ACME directory (a private or
    /// test CA), besides the public ones.
    #[arg(long, value_name = "FILE", requires = "acme_domain")]
    acme_directory_ca: Option<PathBuf>,
    /// FOR TESTS: renew this long after a certificate was obtained.
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    acme_renew_after: Option<std::time::Duration>,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add an account. The password is read from stdin (one line) or, on a
    /// terminal, prompted for without echo; argon2id-hashed.
    Add {
        #[command(flatten)]
        state: StateDir,
        /// The account's email address (its identity).
        email: String,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        state: StateDir,
    },
    /// Remove an account: its sessions end and its OAuth tokens are revoked.
    Remove {
        #[command(flatten)]
        state: StateDir,
        email: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it, alone, on stdout (it is shown only once).
    Create {
        #[command(flatten)]
        state: StateDir,
        /// The identity the token belongs to (an email address).
        #[arg(long)]
        owner: String,
        /// A name to recognise the token by in `relay token list`.
        #[arg(long)]
        name: Option<String>,
        /// A client access token (to call routes) instead of an agent token.
        #[arg(long)]
        client: bool,
        /// Expire after this long, e.g. 90d.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List every token: id, kind, status, owner, name, expiry, last use.
    List {
        #[command(flatten)]
        state: StateDir,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token now. A connected agent using it is disconnected.
    Revoke {
        #[command(flatten)]
        state: StateDir,
        /// The token's id (from `relay token list`).
        id: String,
    },
    /// Issue a successor; the old token keeps working for the grace period.
    Rotate {
        #[command(flatten)]
        state: StateDir,
        /// The id of the token to replace (from `relay token list`).
        id: String,
        /// How long the old token stays valid.
        #[arg(long, default_value = "24h")]
        grace: String,
        /// Expiry of the new token, e.g. 90d.
        #[arg(long)]
        expires: Option<String>,
    },
}

#[derive(Subcommand)]
enum ToolsCommand {
    /// Show a route's pinned tools: hash prefix, when pinned, pending change.
    List {
        #[command(flatten)]
        state: StateDir,
        /// The route.
        #[arg(long)]
        route: String,
        /// One JSON object per tool, with full hashes and definitions.
        #[arg(long)]
        json: bool,
    },
    /// Approve pending tool changes of a route: the new definitions become
    /// the pins (audited). Takes effect at once on a running relay.
    Approve {
        #[command(flatten)]
        state: StateDir,
        /// The route.
        #[arg(long)]
        route: String,
        /// Only this tool (default: every pending change of the route).
        #[arg(long)]
        tool: Option<String>,
    },
}

#[derive(Subcommand)]
enum RouteCommand {
    /// List claimed routes and their owners.
    List {
        #[command(flatten)]
        state: StateDir,
    },
    /// Release a route so that another owner may claim it.
    Release {
        #[command(flatten)]
        state: StateDir,
        /// The route name.
        name: String,
    },
}

/// `--admin-listen`: an address, or `off`.
#[derive(Clone, Copy)]
struct AdminListen(Option<SocketAddr>);

fn parse_admin_listen(s: &str) -> Result<AdminListen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(AdminListen(None));
    }
    s.parse()
        .map(|a| AdminListen(Some(a)))
        .map_err(|e| format!("{e} (an address like 127.0.0.1:9464, or off)"))
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Whether a flag came from the command line or the environment (which
    // win over the config file) rather than from its default.
    let given = |id: &str| {
        let m = matches.subcommand_matches("serve").unwrap_or(&matches);
        matches!(
            m.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
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
                relay::secret_file::command_line_warning(flag, instead)
            );
        }
    }
    // `serve` sets up logging once it has read its config file.
    if !matches!(cli.command, Command::Serve(_)) {
        logging::init(cli.log_format);
    }
    match run(cli.command, cli.log_format, &given) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn open(state: &StateDir) -> anyhow::Result<Store> {
    let dir = state.path();
    Store::open(&dir).with_context(|| format!("cannot open the state in {}", dir.display()))
}

fn run(
    command: Command,
    log_format: LogFormat,
    given: &dyn Fn(&str) -> bool,
) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(*args, log_format, given),
        Command::Config(ConfigCommand::Check { file }) => {
            println!("{}", ConfigFile::check(&file)?.summary());
            Ok(())
        }
        Command::Reload { state, wait } => {
            let outcome = relay::reload::request(&state.path(), wait)?;
            if outcome.ok {
                println!("{}", outcome.message);
                Ok(())
            } else {
                anyhow::bail!("{}", outcome.message)
            }
        }
        Command::Token(TokenCommand::Create {
            state,
            owner,
            name,
            client,
            expires,
        }) => {
            let store = open(&state)?;
            let kind = if client {
                TokenKind::Client
            } else {
                TokenKind::Agent
            };
            let expires = expires.as_deref().map(admin::parse_duration).transpose()?;
            let (record, secret) =
                admin::create_token(&store, kind, &owner, name.as_deref(), expires)?;
            eprintln!(
                "created {} token {} for {} (shown once; store it now)",
                record.kind, record.id, record.owner
            );
            println!("{secret}");
            Ok(())
        }
        Command::Token(TokenCommand::List { state, json }) => {
            let store = open(&state)?;
            let out = if json {
                admin::list_tokens_json(&store)?
            } else {
                admin::list_tokens(&store)?
            };
            print!("{out}");
            Ok(())
        }
        Command::Token(TokenCommand::Revoke { state, id }) => {
            let store = open(&state)?;
            let record = store.revoke_token(&id)?;
            eprintln!(
                "revoked {} token {} of {}",
                record.kind, record.id, record.owner
            );
            Ok(())
        }
        Command::Token(TokenCommand::Rotate {
            state,
            id,
            grace,
            expires,
        }) => {
            let store = open(&state)?;
            let grace = admin::parse_duration(&grace)?;
            let expires_at = expires
                .as_deref()
                .map(admin::parse_duration)
                .transpose()?
                .map(|d| relay::store::now() + d.as_secs() as i64);
            let (record, secret) = store.rotate_token(&id, grace, expires_at)?;
            eprintln!(
                "issued token {} to replace {id}; {id} stays valid for {}",
                record.id,
                humantime::format_duration(grace)
            );
            println!("{}", secret.expose());
            Ok(())
        }
        Command::Audit {
            verify: Some(AuditCommand::Verify { state, files }),
            ..
        } => {
            let report = relay::audit_verify::verify_files(&state.path(), &files)?;
            println!("{report}");
            Ok(())
        }
        Command::Audit {
            verify: None,
            state,
            route,
            since,
            decision,
            json,
        } => {
            let since = since
                .as_deref()
                .map(|s| {
                    humantime::parse_rfc3339_weak(s).or_else(|_| {
                        admin::parse_duration(s).map(|d| std::time::SystemTime::now() - d)
                    })
                })
                .transpose()?;
            let query = relay::audit::Query {
                route,
                since,
                decision,
            };
            let dir = state.path();
            let (events, bad) = relay::audit::read_all(&dir, &query)?;
            print!("{}", admin::format_audit(&events, json));
            if bad > 0 {
                eprintln!("warning: {bad} line(s) of the audit files in {} are not audit events (a torn write after a crash?)", dir.display());
            }
            Ok(())
        }
        Command::User(UserCommand::Add { state, email }) => {
            let store = open(&state)?;
            let password = read_password()?;
            relay::oauth::accounts::add_user(&store, &email, &password)?;
            eprintln!("added user {}", email.trim());
            Ok(())
        }
        Command::User(UserCommand::List { state }) => {
            let store = open(&state)?;
            println!("{:<40}  ADDED", "EMAIL");
            for (email, created) in store.list_users()? {
                let added =
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(created.max(0) as u64);
                println!("{email:<40}  {}", humantime::format_rfc3339_seconds(added));
            }
            Ok(())
        }
        Command::User(UserCommand::Remove { state, email }) => {
            let store = open(&state)?;
            store.remove_user(&email)?;
            eprintln!("removed user {email}; their sessions and OAuth tokens are revoked");
            Ok(())
        }
        Command::Tools(ToolsCommand::List { state, route, json }) => {
            let store = open(&state)?;
            print!("{}", relay::pins::list(&store, &route, json)?);
            Ok(())
        }
        Command::Tools(ToolsCommand::Approve { state, route, tool }) => {
            let store = open(&state)?;
            print!(
                "{}",
                relay::pins::approve(&store, &state.path(), &route, tool.as_deref())?
            );
            Ok(())
        }
        Command::Route(RouteCommand::List { state }) => {
            let store = open(&state)?;
            println!("{:<32}  OWNER", "ROUTE");
            for (name, owner) in store.list_routes()? {
                println!("{name:<32}  {owner}");
            }
            Ok(())
        }
        Command::Route(RouteCommand::Release { state, name }) => {
            let store = open(&state)?;
            if store.release_route(&name)? {
                eprintln!("released route '{name}'");
                Ok(())
            } else {
                anyhow::bail!("no route named '{name}' is claimed")
            }
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

fn serve(
    args: ServeArgs,
    log_format: LogFormat,
    given: &dyn Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let file = args.config.as_deref().map(ConfigFile::load).transpose()?;
    let file_log_format = file.as_ref().and_then(ConfigFile::log_format);
    logging::init(
        file_log_format
            .filter(|_| !given("log_format"))
            .unwrap_or(log_format),
    );
    let acme = args.acme;
    let tls = match (args.tls_cert, args.tls_key, args.self_signed, acme.acme_domain) {
        (Some(cert), Some(key), false, None) => TlsSource::Files { cert, key },
        (None, None, true, None) => TlsSource::SelfSigned,
        (None, None, false, Some(domain)) => TlsSource::Acme(relay::AcmeConfig {
            domain,
            email: acme.acme_email.unwrap_or_default(),
            directory: acme.acme_directory,
            directory_ca: acme.acme_directory_ca,
            renew_after: acme.acme_renew_after,
        }),
        _ => file.as_ref().and_then(ConfigFile::tls).context(
            "give one of --acme-domain DOMAIN --acme-email EMAIL, --tls-cert FILE --tls-key FILE, or --self-signed (or [acme] or [tls] in --config)",
        )?,
    };
    if args.public_url.is_none()
        && args.listen.ip().is_unspecified()
        && !matches!(tls, TlsSource::Acme(_))
    {
        tracing::warn!(
            "no --public-url: route URLs will say https://localhost; set --public-url https://your.domain"
        );
    }
    let mut config = RelayConfig::new(args.listen, args.state.path(), tls);
    config.public_url = args.public_url;
    config.quic = !args.no_quic;
    config.response_timeout = args.response_timeout;
    config.keepalive_interval = args.keepalive_interval;
    config.drain_timeout = args.drain_timeout;
    config.max_body = args.max_body;
    config.audit_arguments = args.audit_arguments;
    config.audit_rotate_size = args.audit_rotate_size;
    config.policy = args.policy;
    config.allow_origins = args.allow_origins;
    config.sse_keepalive = args.sse_keepalive;
    config.access_token_ttl = args.access_token_ttl;
    config.cimd = relay::oauth::cimd::CimdConfig {
        enabled: args.cimd == "on",
        allow_domains: args.cimd_allow_domains,
        allow_loopback: args.cimd_dev_allow_loopback,
        extra_ca: args.cimd_ca,
    };
    config.upstream = relay::oauth::upstream::UpstreamConfig {
        oidc_issuer: args.oidc_issuer,
        oidc_client_id: args.oidc_client_id,
        oidc_client_secret: args
            .oidc_client_secret
            .map(relay::oauth::upstream::Secret::new),
        oidc_groups_claim: args.oidc_groups_claim,
        oidc_name: args.oidc_name,
        github_client_id: args.github_client_id,
        github_client_secret: args
            .github_client_secret
            .map(relay::oauth::upstream::Secret::new),
        github_base_url: args.github_base_url,
        github_api_url: args.github_api_url,
        dev_allow_http_loopback: args.upstream_dev_allow_http_loopback,
    };
    config.refresh_token_ttl = args.refresh_token_ttl;
    config.device_code_ttl = args.device_code_ttl;
    config.device_poll_interval = args.device_poll_interval;
    config.max_tools_list = args.max_tools_list;
    config.rate_limit_route = args.rate_limit_route;
    config.rate_limit_identity = args.rate_limit_identity;
    config.max_connections_per_ip = args.max_connections_per_ip;
    config.max_routes_per_owner = args.max_routes_per_owner;
    config.max_quic_handshakes_per_ip = args.max_quic_handshakes_per_ip;
    config.header_read_timeout = args.header_read_timeout;
    config.http_idle_timeout = args.http_idle_timeout;
    config.body_read_timeout = args.body_read_timeout;
    config.admin_listen = args.admin_listen.0;
    config.bench_disable_policy_and_audit = args.bench_disable_policy_and_audit;
    if let Some(file) = &file {
        file.apply(&mut config, given);
    }
    if config.public_url.is_none() && config.listen.ip().is_unspecified() {
        tracing::warn!(
            "no --public-url: route URLs will say https://localhost; set --public-url https://your.domain"
        );
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Before anything can name this process: SIGHUP must not end it.
        let mut reloads =
            relay::signals::ReloadRequests::listen().context("cannot listen for SIGHUP")?;
        let state_dir = config.state_dir.clone();
        let relay = relay::start(config).await?;
        let pidfile = relay::pidfile::PidFile::create(&state_dir)?;
        if pidfile.is_none() {
            tracing::warn!(
                pidfile = %relay::pidfile::path(&state_dir).display(),
                "another relay serves this state dir; `relay reload` reaches that one, not this"
            );
        }
        if let Some(admin) = relay.admin_addr {
            println!("admin listener (metrics, health) on http://{admin}");
        }
        println!(
            "drawbridge relay listening on {} (tcp{}) as {}",
            relay.local_addr,
            if relay.state.config.quic { "+udp" } else { "" },
            relay.public_url
        );
        if let Some(ca) = &relay.ca_path {
            println!(
                "self-signed: agents and clients should trust {}",
                ca.display()
            );
        }
        let stop = relay::signals::stop_requested();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = reloads.next() => {
                    let outcome = relay.reload();
                    if let Err(e) = relay::reload::record(&state_dir, &outcome) {
                        tracing::error!(error = %e, "cannot record the reload's outcome for `relay reload`");
                    }
                }
            }
        }
        relay.shutdown().await;
        drop(pidfile);
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `relay serve` flag has a key in the config file, and every key
    /// stands for a flag (a new flag without a key fails here).
    #[test]
    fn every_serve_flag_has_a_config_key() {
        let mut cli = Cli::command();
        cli.build();
        let serve = cli.find_subcommand("serve").expect("serve");
        let flags: Vec<String> = serve
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_long().is_some())
            .map(|a| a.get_id().to_string())
            .filter(|id| !["config", "help"].contains(&id.as_str()))
            .collect();
        let keys: Vec<&str> = relay::config_file::KEYS.iter().map(|(_, f)| *f).collect();
        let missing: Vec<&String> = flags
            .iter()
            .filter(|f| !keys.contains(&f.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "flags without a config key: {missing:?}"
        );
        let unknown: Vec<&&str> = keys
            .iter()
            .filter(|k| !flags.iter().any(|f| f == *k))
            .collect();
        assert!(unknown.is_empty(), "config keys for no flag: {unknown:?}");
    }
}
