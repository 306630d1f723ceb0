//! The relay's validated configuration ([`RelayConfig`]), and where it comes
//! from: the settings of `relay serve` ([`settings`]: its flags and the keys
//! of the config file, [`file`]), `--state-dir` ([`state_dir`]), and what
//! the authorization server is told ([`oauth`]).

pub mod database;
pub mod file;
pub mod oauth;
pub mod settings;
pub mod state_dir;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::tls::acme::AcmeConfig;

/// Where the relay's TLS certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files given by the operator.
    Files { cert: PathBuf, key: PathBuf },
    /// A local CA in the state dir issues the certificate (development).
    SelfSigned,
    /// An ACME CA (Let's Encrypt by default) issues and renews it.
    Acme(AcmeConfig),
}

/// `--max-tools-list`'s default: the cap on a buffered list answer (or one
/// event of a stream) that the relay filters.
pub const DEFAULT_MAX_TOOLS_LIST: usize = 8 * 1024 * 1024;

/// `--audit-rotate-size`'s default: 64 MiB.
pub const DEFAULT_AUDIT_ROTATE_SIZE: u64 = 64 * 1024 * 1024;

/// Everything `relay serve` needs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// TCP (HTTPS + TLS tunnel) and UDP (QUIC tunnel) address.
    pub listen: SocketAddr,
    /// How the relay names itself (`https://host[:port]`). `None`: derived
    /// from the bound address.
    pub public_url: Option<String>,
    pub tls: TlsSource,
    pub state_dir: PathBuf,
    /// Accept QUIC tunnels on UDP.
    pub quic: bool,
    /// How long to wait for an agent's response head before answering 504.
    pub response_timeout: Duration,
    /// How often agents ping; an agent silent for three intervals is dropped.
    pub keepalive_interval: Duration,
    /// How long a TLS or tunnel handshake may take.
    pub handshake_timeout: Duration,
    /// How long in-flight requests may take to finish on shutdown.
    pub drain_timeout: Duration,
    /// Threads serving connections (1: a current-thread runtime).
    pub threads: usize,
    /// How often the relay looks for tokens revoked by other processes.
    pub revocation_check_interval: Duration,
    /// Largest JSON-RPC request body read (bigger ones get 413).
    pub max_body: usize,
    /// Keep tool arguments in the audit log instead of their hash.
    pub audit_arguments: bool,
    /// Rotate `audit.jsonl` when a line would take it past this many bytes
    /// (0: never); the hash chain goes on in the next file.
    pub audit_rotate_size: u64,
    /// The organisation's Cedar policy, applied to every route (its forbids win).
    pub policy: Option<PathBuf>,
    /// Browser origins allowed besides the relay's own and loopback ones
    /// (`*`: every origin). See [`crate::http::origin`].
    pub allow_origins: Vec<String>,
    /// Idle time after which an event stream gets a keep-alive comment
    /// (zero: never).
    pub sse_keepalive: Duration,
    /// Lifetime of the OAuth access tokens the relay issues.
    pub access_token_ttl: Duration,
    /// Lifetime of OAuth refresh tokens (each use rotates them).
    pub refresh_token_ttl: Duration,
    /// How long an `agent login` code waits for its approval (RFC 8628).
    pub device_code_ttl: Duration,
    /// How often `agent login` may poll the token endpoint (RFC 8628).
    pub device_poll_interval: Duration,
    /// Largest `tools/list` answer (or event of a stream carrying one) the
    /// relay reads to filter it; a bigger one becomes a JSON-RPC error.
    pub max_tools_list: usize,
    /// Requests per route, from every caller together (`None`: unlimited).
    pub rate_limit_route: Option<crate::limits::rate::Rate>,
    /// Requests per identity, over every route (`None`: unlimited).
    pub rate_limit_identity: Option<crate::limits::rate::Rate>,
    /// TCP and QUIC connections one address may hold at once (0: unlimited).
    pub max_connections_per_ip: u32,
    /// Route names one owner may claim (0: unlimited).
    pub max_routes_per_owner: u32,
    /// QUIC handshakes one address may have in progress (0: unlimited).
    pub max_quic_handshakes_per_ip: u32,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// A client connection with no request in flight this long is closed
    /// (zero: never).
    pub http_idle_timeout: Duration,
    /// How long a client may take to send a JSON-RPC request body (408 after).
    pub body_read_timeout: Duration,
    /// The admin listener (plain HTTP: `/metrics`, `/healthz`, `/readyz`;
    /// `None`: none). See [`crate::server::admin_http`].
    pub admin_listen: Option<SocketAddr>,
    /// FOR BENCHMARKS ONLY: forward JSON-RPC bodies without classifying them,
    /// deciding them with the policy or auditing them (tokens and route
    /// ownership are still checked). Measures what policy and audit cost.
    pub bench_disable_policy_and_audit: bool,
    /// Client ID metadata documents (URL client ids).
    pub cimd: crate::config::oauth::CimdConfig,
    /// Sign-in through upstream identity providers.
    pub upstream: crate::config::oauth::UpstreamConfig,
    /// The address agents dial for this node of a cluster (`None`: the
    /// listen address).
    pub node_address: Option<SocketAddr>,
    /// The cluster's shared secret (`None`: the relay is alone).
    pub cluster_secret_file: Option<PathBuf>,
    /// The PostgreSQL database of the state (`--database-url`); `None`: the
    /// SQLite file in `state_dir`.
    pub database_url: Option<crate::config::oauth::Secret>,
}

impl RelayConfig {
    /// Defaults for a relay listening on `listen` with state in `state_dir`.
    pub fn new(listen: SocketAddr, state_dir: PathBuf, tls: TlsSource) -> Self {
        RelayConfig {
            listen,
            public_url: None,
            tls,
            state_dir,
            quic: true,
            response_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            threads: 1,
            revocation_check_interval: Duration::from_secs(1),
            max_body: 4 * 1024 * 1024,
            audit_arguments: false,
            audit_rotate_size: DEFAULT_AUDIT_ROTATE_SIZE,
            policy: None,
            allow_origins: Vec::new(),
            sse_keepalive: Duration::from_secs(15),
            access_token_ttl: Duration::from_secs(3600),
            refresh_token_ttl: Duration::from_secs(30 * 86_400),
            device_code_ttl: Duration::from_secs(600),
            device_poll_interval: Duration::from_secs(5),
            max_tools_list: DEFAULT_MAX_TOOLS_LIST,
            rate_limit_route: None,
            rate_limit_identity: None,
            max_connections_per_ip: 256,
            max_routes_per_owner: 64,
            max_quic_handshakes_per_ip: 16,
            header_read_timeout: Duration::from_secs(30),
            http_idle_timeout: Duration::from_secs(120),
            body_read_timeout: Duration::from_secs(30),
            admin_listen: None,
            bench_disable_policy_and_audit: false,
            cimd: crate::config::oauth::CimdConfig::default(),
            upstream: crate::config::oauth::UpstreamConfig::default(),
            node_address: None,
            cluster_secret_file: None,
            database_url: None,
        }
    }
}
