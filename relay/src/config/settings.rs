//! The settings of `relay serve`: one type for its flags, their environment
//! variables and the keys of its config file ([`crate::config::file`]).
//!
//! Each setting is one field, declared once, that derives both its flag
//! (`clap`: the flag is the field's name in kebab-case) and its key
//! (`serde`: the field's name, or `rename`, in the table of the struct it
//! is in: [`Tls`] is `[tls]`, [`Limits`] is `[limits]`…). A key a deployment
//! will want is one more field (with `#[serde(skip)]`, a flag without a
//! key, as the hidden test flags are).
//!
//! Precedence, highest first: the command line, the environment variable,
//! the file, the built-in default ([`Settings::overlay`], by clap's
//! [`ValueSource`](clap::parser::ValueSource) of each flag). The
//! certificate is one setting: when the command line names one
//! (`--tls-cert`, `--self-signed`, `--acme-domain`), the file's `[tls]` and
//! `[acme]` are left out whole.
//!
//! `display_order` keeps `relay serve --help` in the order it always had,
//! which mixes the file's tables; the file's tables keep the order of their
//! keys in its error messages.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Deserializer};

use crate::config::database::Database;
use crate::config::oauth::Secret;
use crate::config::state_dir::StateDir;
use crate::config::{AcmeConfig, RelayConfig, TlsSource};
use crate::limits::rate::Rate;
use crate::logging::LogFormat;

/// A setting, or a table of them, that a config file may give.
pub trait Overlay {
    /// Takes `file`'s value, unless the command line or the environment
    /// gave flag `id` (`given`).
    fn overlay(&mut self, file: Self, id: &str, given: &dyn Fn(&str) -> bool);
}

/// One setting: the file's value wins over the default, not over a flag.
macro_rules! setting {
    ($($ty:ty),* $(,)?) => {$(
        impl Overlay for $ty {
            fn overlay(&mut self, file: Self, id: &str, given: &dyn Fn(&str) -> bool) {
                if !given(id) {
                    *self = file;
                }
            }
        }
    )*};
}

setting!(
    bool,
    u32,
    u64,
    usize,
    String,
    Vec<String>,
    Duration,
    SocketAddr,
    AdminListen,
    StateDir,
    Option<SocketAddr>,
    Option<String>,
    Option<PathBuf>,
    Option<Rate>,
    Option<Secret>,
    Option<LogFormat>,
);

/// A table of settings: the struct, its [`Overlay`] field by field (each
/// field's flag id is its name), and its built-in defaults.
macro_rules! table {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl Overlay for $name {
            fn overlay(&mut self, file: Self, _: &str, given: &dyn Fn(&str) -> bool) {
                $( Overlay::overlay(&mut self.$field, file.$field, stringify!($field), given); )*
            }
        }

        /// The built-in defaults (what a file that does not set a key means).
        impl Default for $name {
            fn default() -> Self {
                built_in()
            }
        }
    };
}

table! {
    /// Everything `relay serve` can be told, but `--config` itself.
    #[derive(Debug, Clone, Args, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Settings {
        /// Address for HTTPS and both tunnel transports (TCP and UDP).
        #[arg(long, default_value = "0.0.0.0:443", display_order = 1)]
        #[serde(deserialize_with = "text")]
        pub listen: SocketAddr,
        /// How the relay names itself, e.g. https://relay.example.com.
        /// Default: https://<--acme-domain>, else https://<listen address>
        /// (https://localhost when listening on all addresses).
        #[arg(long, env = "DRAWBRIDGE_PUBLIC_URL", display_order = 2)]
        pub public_url: Option<String>,
        #[command(flatten, next_display_order = 11)]
        pub state_dir: StateDir,
        // `[database]`: PostgreSQL instead of the state dir's SQLite.
        #[command(flatten)]
        pub database: Database,
        /// `--log-format` is the command's, not `serve`'s.
        #[arg(skip)]
        #[serde(deserialize_with = "log_format")]
        pub log_format: Option<LogFormat>,
        /// Do not accept QUIC tunnels (agents use TLS over TCP).
        #[arg(long, display_order = 12)]
        #[serde(rename = "quic", deserialize_with = "negated")]
        pub no_quic: bool,
        /// The organisation's Cedar policy for every route: its forbids win over
        /// any route owner's permits (see deploy/policies/). Checked at start.
        #[arg(long, display_order = 19)]
        pub policy: Option<PathBuf>,
        /// A browser origin (https://app.example.com[:port]) allowed to call
        /// routes, besides the relay's own (--public-url) and loopback ones
        /// (http(s)://localhost, 127.0.0.1, [::1] on any port). Repeatable; '*'
        /// allows every origin. Requests without Origin (server-side clients)
        /// are always allowed; any other Origin gets 403.
        #[arg(long = "allow-origin", value_name = "ORIGIN", display_order = 20)]
        pub allow_origins: Vec<String>,
        /// Write tool arguments to the audit log in the clear (default: a SHA-256).
        #[arg(long, display_order = 17)]
        pub audit_arguments: bool,
        /// Rotate <state-dir>/audit.jsonl when a line would take it past this
        /// many bytes (0: never): it becomes audit-<seq of its last line>.jsonl
        /// and the hash chain goes on in a new audit.jsonl. Rotated files are
        /// kept; remove old ones yourself.
        #[arg(long, value_name = "BYTES", default_value_t = crate::config::DEFAULT_AUDIT_ROTATE_SIZE, display_order = 18)]
        pub audit_rotate_size: u64,
        /// How long an agent may take to start answering a request before 504.
        #[arg(long, default_value = "300s", value_parser = humantime::parse_duration, display_order = 13)]
        #[serde(deserialize_with = "duration")]
        pub response_timeout: Duration,
        /// How often agents ping; an agent silent for three intervals is dropped.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, display_order = 14)]
        #[serde(deserialize_with = "duration")]
        pub keepalive_interval: Duration,
        /// How long in-flight requests may take to finish on shutdown.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, display_order = 15)]
        #[serde(deserialize_with = "duration")]
        pub drain_timeout: Duration,
        /// Threads serving connections. 1 (the default): every connection,
        /// tunnel and request on one thread, which costs the least per
        /// request and answers soonest (a hand-off between threads costs a
        /// wake-up, tens of µs on a virtual machine). More: requests spread
        /// over that many threads, for a relay whose clients keep more than
        /// one CPU busy. Password checks and database calls always run on
        /// threads of their own.
        #[arg(long, default_value_t = 1, value_name = "N", value_parser = parse_threads, display_order = 16)]
        #[serde(deserialize_with = "threads")]
        pub threads: usize,
        /// Send a keep-alive comment on an event stream idle this long (0:
        /// never), so that proxies do not close it.
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration, display_order = 21)]
        #[serde(deserialize_with = "duration")]
        pub sse_keepalive: Duration,
        /// Admin listener: plain HTTP with /metrics (Prometheus), /healthz and
        /// /readyz; `off` for none. It has NO authentication: keep it on
        /// loopback or a private network, never the internet.
        #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR|off", value_parser = parse_admin_listen, display_order = 35)]
        #[serde(deserialize_with = "text")]
        pub admin_listen: AdminListen,
        #[command(flatten)]
        pub tls: Tls,
        #[command(flatten)]
        pub acme: Acme,
        #[command(flatten)]
        pub limits: Limits,
        #[command(flatten)]
        pub oauth: OAuth,
        #[command(flatten)]
        pub cluster: Cluster,
        /// FOR BENCHMARKS ONLY (bench/): no per-message policy and no audit.
        #[arg(long, hide = true)]
        #[serde(skip)]
        pub bench_disable_policy_and_audit: bool,
    }
}

table! {
    /// `[cluster]`: several relay nodes on one database.
    #[derive(Debug, Clone, Args, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Cluster {
        /// The address (HOST:PORT) agents dial for this node of a cluster,
        /// and peers forward requests to. Default: the listen address.
        #[arg(long, value_name = "HOST:PORT", display_order = 40)]
        #[serde(deserialize_with = "optional_text")]
        pub node_address: Option<SocketAddr>,
        /// A file with the secret every node of the cluster shares (at least
        /// 32 bytes): with it the relay joins the cluster of the nodes on its
        /// database, tells its agents the live nodes, and signs and checks
        /// requests forwarded between nodes.
        #[arg(long, env = "DRAWBRIDGE_CLUSTER_SECRET_FILE", value_name = "FILE", display_order = 41)]
        #[serde(rename = "secret_file")]
        pub cluster_secret_file: Option<PathBuf>,
    }
}

/// `[tls]`: the certificate from files, or self-signed.
#[derive(Debug, Clone, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain.
    #[arg(
        long,
        requires = "tls_key",
        conflicts_with = "self_signed",
        display_order = 3
    )]
    #[serde(rename = "cert")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, requires = "tls_cert", display_order = 4)]
    #[serde(rename = "key")]
    pub tls_key: Option<PathBuf>,
    /// Issue a certificate from a local CA kept in the state dir; agents and
    /// clients trust <state-dir>/ca.pem. For development and private networks.
    #[arg(long, display_order = 5)]
    pub self_signed: bool,
}

/// Certificates from an ACME CA (Let's Encrypt by default), validated with
/// TLS-ALPN-01 on --listen's port (443 must be reachable from the internet).
#[derive(Debug, Clone, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Acme {
    /// Obtain and renew the certificate for this DNS name through ACME; it
    /// must resolve to this relay. Kept in <state-dir>/acme/. Also the
    /// default --public-url (https://DOMAIN).
    #[arg(long, value_name = "DOMAIN", env = "DRAWBRIDGE_ACME_DOMAIN", requires = "acme_email",
          conflicts_with_all = ["tls_cert", "self_signed"], display_order = 6)]
    #[serde(rename = "domain")]
    pub acme_domain: Option<String>,
    /// The ACME account's contact email. Giving it agrees to the CA's terms
    /// of service.
    #[arg(
        long,
        value_name = "EMAIL",
        env = "DRAWBRIDGE_ACME_EMAIL",
        requires = "acme_domain",
        display_order = 7
    )]
    #[serde(rename = "email")]
    pub acme_email: Option<String>,
    /// The ACME directory URL (default: Let's Encrypt's production one).
    #[arg(long, value_name = "URL", requires = "acme_domain",
          default_value = crate::AcmeConfig::LETS_ENCRYPT, display_order = 8)]
    #[serde(rename = "directory")]
    pub acme_directory: String,
    /// PEM CA certificate(s) to trust for the ACME directory (a private or
    /// test CA), besides the public ones.
    #[arg(long, value_name = "FILE", requires = "acme_domain", display_order = 9)]
    #[serde(rename = "directory_ca")]
    pub acme_directory_ca: Option<PathBuf>,
    /// FOR TESTS: renew this long after a certificate was obtained.
    #[arg(long, hide = true, value_parser = humantime::parse_duration)]
    #[serde(skip)]
    pub acme_renew_after: Option<std::time::Duration>,
}

table! {
    /// `[limits]`: sizes, rates, connections and timeouts.
    #[derive(Debug, Clone, Args, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Limits {
        /// Largest JSON-RPC request body, in bytes; bigger ones get 413.
        #[arg(long, default_value_t = 4 * 1024 * 1024, display_order = 16)]
        pub max_body: usize,
        /// Largest tools/list answer (or resources/list, resources/templates/list,
        /// prompts/list), in bytes, the relay reads to filter it per caller; a
        /// bigger one becomes a JSON-RPC error (fail closed).
        #[arg(long, default_value_t = crate::config::DEFAULT_MAX_TOOLS_LIST, display_order = 22)]
        pub max_tools_list: usize,
        /// Most requests to one route, from all callers together: N/s, N/min
        /// or N/h (a burst of N, then evenly spread). Over it: 429 with
        /// Retry-After. Default: unlimited.
        #[arg(long, value_name = "RATE", display_order = 27)]
        #[serde(deserialize_with = "optional_text")]
        pub rate_limit_route: Option<crate::limits::rate::Rate>,
        /// Most requests of one identity (a token's owner, a signed-in user),
        /// over all routes: N/s, N/min or N/h. Over it: 429 with Retry-After.
        /// Default: unlimited.
        #[arg(long, value_name = "RATE", display_order = 28)]
        #[serde(deserialize_with = "optional_text")]
        pub rate_limit_identity: Option<crate::limits::rate::Rate>,
        /// TCP and QUIC connections one client address may hold at once (0:
        /// unlimited); more are closed at once, before TLS.
        #[arg(long, default_value_t = 256, display_order = 29)]
        pub max_connections_per_ip: u32,
        /// Route names one owner may claim (0: unlimited). An agent offering
        /// one more new name is refused with a message saying so; the routes
        /// already claimed keep working. `relay route release` frees a name.
        #[arg(long, default_value_t = 64, display_order = 30)]
        pub max_routes_per_owner: u32,
        /// QUIC handshakes one address may have in progress (0: unlimited);
        /// more are refused. Bounds floods of half-open handshakes.
        #[arg(long, default_value_t = 16, display_order = 31)]
        pub max_quic_handshakes_per_ip: u32,
        /// How long a client may take to send a request's headers (slowloris).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, display_order = 32)]
        #[serde(deserialize_with = "duration")]
        pub header_read_timeout: Duration,
        /// Close a client's HTTPS connection (HTTP/2 or HTTP/1.1 keep-alive)
        /// that has had no request in flight this long (0: never). A standing
        /// event stream is a request in flight.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration, display_order = 33)]
        #[serde(deserialize_with = "duration")]
        pub http_idle_timeout: Duration,
        /// How long a client may take to send a JSON-RPC request body; after it
        /// the relay answers 408 and forwards nothing.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, display_order = 34)]
        #[serde(deserialize_with = "duration")]
        pub body_read_timeout: Duration,
    }
}

table! {
    /// `[oauth]`: the authorization server's lifetimes, client metadata
    /// documents and the upstream identity providers.
    #[derive(Debug, Clone, Args, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct OAuth {
        /// Lifetime of the OAuth access tokens the relay issues to MCP clients.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, display_order = 23)]
        #[serde(deserialize_with = "duration")]
        pub access_token_ttl: Duration,
        /// Lifetime of OAuth refresh tokens (each use rotates them).
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration, display_order = 24)]
        #[serde(deserialize_with = "duration")]
        pub refresh_token_ttl: Duration,
        /// How long an `agent login` code waits to be approved at /device.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, display_order = 25)]
        #[serde(deserialize_with = "duration")]
        pub device_code_ttl: Duration,
        /// How often `agent login` may poll for its approval (faster polls get
        /// slow_down).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, display_order = 26)]
        #[serde(deserialize_with = "duration")]
        pub device_poll_interval: Duration,
        /// Client ID metadata documents: an MCP client whose client_id is an
        /// https URL is described by the JSON document there, fetched by the
        /// relay (public addresses only, no redirects, at most 5 KiB and 5 s,
        /// cached 5 min to 24 h per its Cache-Control).
        #[arg(long, default_value = "on", value_parser = ["on", "off"], display_order = 36)]
        #[serde(deserialize_with = "on_off")]
        pub cimd: String,
        /// Fetch client metadata documents only from DOMAIN and its subdomains.
        /// Repeatable; default: any public host.
        #[arg(long = "cimd-allow-domain", value_name = "DOMAIN", display_order = 37)]
        pub cimd_allow_domains: Vec<String>,
        /// DEVELOPMENT ONLY: client metadata documents may be served from
        /// loopback addresses (other private addresses stay refused).
        #[arg(long, display_order = 38)]
        pub cimd_dev_allow_loopback: bool,
        /// DEVELOPMENT ONLY: trust this CA (PEM) too when fetching client
        /// metadata documents.
        #[arg(long, value_name = "FILE", display_order = 39)]
        pub cimd_ca: Option<PathBuf>,
        /// Sign-in through this OpenID Connect provider (its issuer URL; the
        /// relay reads <URL>/.well-known/openid-configuration at startup). The
        /// redirect URI to register there is <public URL>/oauth/callback/oidc.
        #[arg(long, env = "DRAWBRIDGE_OIDC_ISSUER", value_name = "URL", display_order = 40)]
        pub oidc_issuer: Option<String>,
        /// The relay's client id at the OpenID Connect provider.
        #[arg(long, env = "DRAWBRIDGE_OIDC_CLIENT_ID", value_name = "ID", display_order = 41)]
        pub oidc_client_id: Option<String>,
        /// The relay's client secret at the OpenID Connect provider. Better
        /// given in the environment (DRAWBRIDGE_OIDC_CLIENT_SECRET) or in the
        /// --config file (oauth.oidc_client_secret, the file kept 0600): on the
        /// command line every user of the machine can read it (ps).
        #[arg(
            long,
            env = "DRAWBRIDGE_OIDC_CLIENT_SECRET",
            hide_env_values = true,
            value_name = "SECRET",
            value_parser = secret,
            display_order = 42
        )]
        pub oidc_client_secret: Option<Secret>,
        /// The ID token (or userinfo) claim that lists the person's groups.
        #[arg(long, default_value = "groups", value_name = "CLAIM", display_order = 43)]
        pub oidc_groups_claim: String,
        /// The provider's name on the sign-in button. Default: the issuer's host.
        #[arg(long, value_name = "NAME", display_order = 44)]
        pub oidc_name: Option<String>,
        /// Sign-in with GitHub: the client id of the relay's GitHub OAuth app
        /// (its callback URL: <public URL>/oauth/callback/github). The email is
        /// the primary verified address; the groups are the person's
        /// organisations and their teams as org/team.
        #[arg(long, env = "DRAWBRIDGE_GITHUB_CLIENT_ID", value_name = "ID", display_order = 45)]
        pub github_client_id: Option<String>,
        /// The GitHub OAuth app's client secret. Better given in the environment
        /// (DRAWBRIDGE_GITHUB_CLIENT_SECRET) or in the --config file
        /// (oauth.github_client_secret, the file kept 0600): on the command line
        /// every user of the machine can read it (ps).
        #[arg(
            long,
            env = "DRAWBRIDGE_GITHUB_CLIENT_SECRET",
            hide_env_values = true,
            value_name = "SECRET",
            value_parser = secret,
            display_order = 46
        )]
        pub github_client_secret: Option<Secret>,
        /// FOR TESTS: GitHub's web endpoints (/login/oauth/…).
        #[arg(long, hide = true, default_value = crate::config::oauth::BASE_URL)]
        #[serde(skip)]
        pub github_base_url: String,
        /// FOR TESTS: GitHub's REST API.
        #[arg(long, hide = true, default_value = crate::config::oauth::API_URL)]
        #[serde(skip)]
        pub github_api_url: String,
        /// DEVELOPMENT ONLY: identity providers may be reached over plain http
        /// on a loopback address.
        #[arg(long, display_order = 49)]
        pub upstream_dev_allow_http_loopback: bool,
    }
}

/// Whether the command line (or the environment) names the certificate.
fn certificate_given(given: &dyn Fn(&str) -> bool) -> bool {
    ["tls_cert", "self_signed", "acme_domain"]
        .into_iter()
        .any(given)
}

impl Overlay for Tls {
    fn overlay(&mut self, file: Self, _: &str, given: &dyn Fn(&str) -> bool) {
        if !certificate_given(given) {
            *self = file;
        }
    }
}

impl Overlay for Acme {
    fn overlay(&mut self, file: Self, _: &str, given: &dyn Fn(&str) -> bool) {
        if !certificate_given(given) {
            *self = file;
        }
    }
}

/// The built-in defaults of a table's flags (no flag given, no environment
/// variable, no file).
fn built_in<T: Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("relay serve")).mut_args(|a| a.env(None));
    command
        .try_get_matches_from(["relay serve"])
        .and_then(|m| T::from_arg_matches(&m))
        .expect("the built-in defaults parse")
}

/// `[tls]` and `[acme]` name each other's flags: their defaults come with
/// the whole.
impl Default for Tls {
    fn default() -> Self {
        Settings::default().tls
    }
}

impl Default for Acme {
    fn default() -> Self {
        Settings::default().acme
    }
}

impl Settings {
    /// Takes from `file` every setting whose flag `given` says did not come
    /// from the command line or the environment.
    pub fn overlay(&mut self, file: Settings, given: &dyn Fn(&str) -> bool) {
        Overlay::overlay(self, file, "", given);
    }

    /// The certificate these settings name, if any: files, else self-signed,
    /// else ACME.
    pub fn certificate(&self) -> Option<TlsSource> {
        let (tls, acme) = (&self.tls, &self.acme);
        match (&tls.tls_cert, &tls.tls_key) {
            (Some(cert), Some(key)) => Some(TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ if tls.self_signed => Some(TlsSource::SelfSigned),
            _ => acme.acme_domain.as_ref().map(|domain| {
                TlsSource::Acme(AcmeConfig {
                    domain: domain.clone(),
                    email: acme.acme_email.clone().unwrap_or_default(),
                    directory: acme.acme_directory.clone(),
                    directory_ca: acme.acme_directory_ca.clone(),
                    renew_after: acme.acme_renew_after,
                })
            }),
        }
    }

    /// The relay's configuration, with the certificate `tls`.
    pub fn into_config(self, tls: TlsSource) -> RelayConfig {
        let (limits, oauth) = (self.limits, self.oauth);
        let mut config = RelayConfig::new(self.listen, self.state_dir.path(), tls);
        config.public_url = self.public_url;
        config.quic = !self.no_quic;
        config.response_timeout = self.response_timeout;
        config.keepalive_interval = self.keepalive_interval;
        config.drain_timeout = self.drain_timeout;
        config.threads = self.threads;
        config.max_body = limits.max_body;
        config.audit_arguments = self.audit_arguments;
        config.audit_rotate_size = self.audit_rotate_size;
        config.policy = self.policy;
        config.allow_origins = self.allow_origins;
        config.sse_keepalive = self.sse_keepalive;
        config.access_token_ttl = oauth.access_token_ttl;
        config.cimd = crate::config::oauth::CimdConfig {
            enabled: oauth.cimd == "on",
            allow_domains: oauth.cimd_allow_domains,
            allow_loopback: oauth.cimd_dev_allow_loopback,
            extra_ca: oauth.cimd_ca,
        };
        config.upstream = crate::config::oauth::UpstreamConfig {
            oidc_issuer: oauth.oidc_issuer,
            oidc_client_id: oauth.oidc_client_id,
            oidc_client_secret: oauth.oidc_client_secret,
            oidc_groups_claim: oauth.oidc_groups_claim,
            oidc_name: oauth.oidc_name,
            github_client_id: oauth.github_client_id,
            github_client_secret: oauth.github_client_secret,
            github_base_url: oauth.github_base_url,
            github_api_url: oauth.github_api_url,
            dev_allow_http_loopback: oauth.upstream_dev_allow_http_loopback,
        };
        config.refresh_token_ttl = oauth.refresh_token_ttl;
        config.device_code_ttl = oauth.device_code_ttl;
        config.device_poll_interval = oauth.device_poll_interval;
        config.max_tools_list = limits.max_tools_list;
        config.rate_limit_route = limits.rate_limit_route;
        config.rate_limit_identity = limits.rate_limit_identity;
        config.max_connections_per_ip = limits.max_connections_per_ip;
        config.max_routes_per_owner = limits.max_routes_per_owner;
        config.max_quic_handshakes_per_ip = limits.max_quic_handshakes_per_ip;
        config.header_read_timeout = limits.header_read_timeout;
        config.http_idle_timeout = limits.http_idle_timeout;
        config.body_read_timeout = limits.body_read_timeout;
        config.admin_listen = self.admin_listen.0;
        config.node_address = self.cluster.node_address;
        config.cluster_secret_file = self.cluster.cluster_secret_file;
        config.bench_disable_policy_and_audit = self.bench_disable_policy_and_audit;
        config.database_url = self.database.database_url;
        config
    }
}

/// `--admin-listen`, `admin_listen`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct AdminListen(pub Option<SocketAddr>);

impl FromStr for AdminListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(AdminListen(None));
        }
        s.parse()
            .map(|a| AdminListen(Some(a)))
            .map_err(|e| format!("{e} (an address like 127.0.0.1:9464, or off)"))
    }
}

fn parse_admin_listen(s: &str) -> Result<AdminListen, String> {
    s.parse()
}

/// The most `--threads` takes.
const MAX_THREADS: usize = 1024;

fn parse_threads(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .and_then(threads_in_range)
        .ok_or_else(threads_range)
}

/// A number of threads from 1 to [`MAX_THREADS`].
fn threads<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    threads_in_range(n).ok_or_else(|| {
        serde::de::Error::custom(format!("invalid threads {n}: {}", threads_range()))
    })
}

fn threads_in_range(n: usize) -> Option<usize> {
    (1..=MAX_THREADS).contains(&n).then_some(n)
}

fn threads_range() -> String {
    format!("expected a number of threads from 1 to {MAX_THREADS}")
}

fn secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(s))
}

/// What each type written as text in the file is called in its errors.
trait Named: FromStr<Err: fmt::Display> {
    const WHAT: &'static str;
    fn invalid(text: &str, e: Self::Err) -> String {
        format!("invalid {} {text:?}: {e}", Self::WHAT)
    }
}
impl Named for SocketAddr {
    const WHAT: &'static str = "address (host:port)";
}
impl Named for humantime::Duration {
    const WHAT: &'static str = "duration";
}
impl Named for Rate {
    const WHAT: &'static str = "rate";
    /// [`Rate`]'s own message names the text already.
    fn invalid(_: &str, e: String) -> String {
        e
    }
}
impl Named for AdminListen {
    const WHAT: &'static str = "admin address";
}
/// A value written as a string and parsed like the flag's (`"30s"`,
/// `"600/min"`, `"0.0.0.0:443"`).
fn text<'de, D: Deserializer<'de>, T: Named>(d: D) -> Result<T, D::Error> {
    let text = String::deserialize(d)?;
    text.parse()
        .map_err(|e| serde::de::Error::custom(T::invalid(&text, e)))
}

fn optional_text<'de, D: Deserializer<'de>, T: Named>(d: D) -> Result<Option<T>, D::Error> {
    text(d).map(Some)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    text::<D, humantime::Duration>(d).map(Into::into)
}

/// `"text"` or `"json"`, as `--log-format` takes.
fn log_format<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LogFormat>, D::Error> {
    let text = String::deserialize(d)?;
    <LogFormat as clap::ValueEnum>::from_str(&text, false)
        .map(Some)
        .map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid log format {text:?}: expected \"text\" or \"json\""
            ))
        })
}

/// `quic = false` is `--no-quic`.
fn negated<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    bool::deserialize(d).map(|b| !b)
}

/// `"on"`/`"off"` (as the command line says it) or `true`/`false`.
fn on_off<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OnOff {
        Bool(bool),
        Word(Word),
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Word {
        On,
        Off,
    }
    let on = matches!(
        OnOff::deserialize(d)?,
        OnOff::Bool(true) | OnOff::Word(Word::On)
    );
    Ok(if on { "on" } else { "off" }.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults are the library's ([`RelayConfig::new`]), but
    /// for the admin listener, which only `relay serve` opens by default.
    #[test]
    fn the_flags_defaults_are_the_librarys() {
        let settings = Settings::default();
        let state_dir = settings.state_dir.path();
        let mut from_flags = settings.into_config(TlsSource::SelfSigned);
        assert_eq!(
            from_flags.admin_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        from_flags.admin_listen = None;
        let library = RelayConfig::new(
            SocketAddr::from(([0, 0, 0, 0], 443)),
            state_dir,
            TlsSource::SelfSigned,
        );
        assert_eq!(format!("{from_flags:?}"), format!("{library:?}"));
    }

    #[test]
    fn a_table_takes_the_files_values_but_for_the_flags_given() {
        let mut flags = Limits {
            max_body: 1,
            max_routes_per_owner: 2,
            ..Limits::default()
        };
        let file = Limits {
            max_body: 10,
            max_routes_per_owner: 20,
            max_connections_per_ip: 30,
            ..Limits::default()
        };
        flags.overlay(file, "limits", &|id| id == "max_body");
        assert_eq!(flags.max_body, 1);
        assert_eq!(flags.max_routes_per_owner, 20);
        assert_eq!(flags.max_connections_per_ip, 30);
    }
}
