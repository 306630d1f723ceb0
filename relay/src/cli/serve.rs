//! `relay serve`: its flags, merged with the config file into the relay's
//! configuration, and the relay run until it is told to stop (reloading on
//! SIGHUP).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::state_dir::StateDir;
use crate::config_file::ConfigFile;
use crate::logging::{self, LogFormat};
use crate::{RelayConfig, TlsSource};

#[derive(Args)]
pub struct ServeArgs {
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
    #[arg(long, value_name = "BYTES", default_value_t = crate::config::DEFAULT_AUDIT_ROTATE_SIZE)]
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
    #[arg(long, default_value_t = crate::tool_filter::DEFAULT_MAX_TOOLS_LIST)]
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
    rate_limit_route: Option<crate::rate_limits::Rate>,
    /// Most requests of one identity (a token's owner, a signed-in user),
    /// over all routes: N/s, N/min or N/h. Over it: 429 with Retry-After.
    /// Default: unlimited.
    #[arg(long, value_name = "RATE")]
    rate_limit_identity: Option<crate::rate_limits::Rate>,
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
    #[arg(long, hide = true, default_value = crate::oauth::github::BASE_URL)]
    github_base_url: String,
    /// FOR TESTS: GitHub's REST API.
    #[arg(long, hide = true, default_value = crate::oauth::github::API_URL)]
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
pub struct AcmeArgs {
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
          default_value = crate::AcmeConfig::LETS_ENCRYPT)]
    acme_directory: String,
    /// PEM CA certificate(s) to trust for the ACME directory (a private or
    /// test CA), besides the public ones.
    #[arg(long, value_name = "FILE", requires = "acme_domain")]
    acme_directory_ca: Option<PathBuf>,
    /// FOR TESTS: renew this long after a certificate was obtained.
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    acme_renew_after: Option<std::time::Duration>,
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

/// Runs the relay with these flags (over `--config`'s file, where not
/// `given`) until SIGINT or SIGTERM.
pub fn serve(
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
        (None, None, false, Some(domain)) => TlsSource::Acme(crate::AcmeConfig {
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
    config.cimd = crate::oauth::cimd::CimdConfig {
        enabled: args.cimd == "on",
        allow_domains: args.cimd_allow_domains,
        allow_loopback: args.cimd_dev_allow_loopback,
        extra_ca: args.cimd_ca,
    };
    config.upstream = crate::oauth::upstream::UpstreamConfig {
        oidc_issuer: args.oidc_issuer,
        oidc_client_id: args.oidc_client_id,
        oidc_client_secret: args
            .oidc_client_secret
            .map(crate::oauth::upstream::Secret::new),
        oidc_groups_claim: args.oidc_groups_claim,
        oidc_name: args.oidc_name,
        github_client_id: args.github_client_id,
        github_client_secret: args
            .github_client_secret
            .map(crate::oauth::upstream::Secret::new),
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
            crate::signals::ReloadRequests::listen().context("cannot listen for SIGHUP")?;
        let state_dir = config.state_dir.clone();
        let relay = crate::start(config).await?;
        let pidfile = crate::pidfile::PidFile::create(&state_dir)?;
        if pidfile.is_none() {
            tracing::warn!(
                pidfile = %crate::pidfile::path(&state_dir).display(),
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
        let stop = crate::signals::stop_requested();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = reloads.next() => {
                    let outcome = relay.reload();
                    if let Err(e) = crate::reload::record(&state_dir, &outcome) {
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
