//! The Drawbridge relay: the server a person self-hosts.
//!
//! * [`listener`] — one port: HTTPS and the TLS tunnel on TCP (told apart by
//!   ALPN), the QUIC tunnel on UDP.
//! * [`agents`] — tunnel handshake, control stream, keep-alives, GoAway.
//! * [`gateway`] — the request path as phases: authenticate → route →
//!   classify → decide (a pure function) → forward ([`forward`]), audited;
//!   every refusal is one [`gateway::Refusal`]. The HTTP pieces every module
//!   shares (bodies, JSON answers, content types, the SSE event splitter)
//!   are in [`http`], which imports nothing else of the relay.
//! * [`store`] — embedded SQLite state: tokens, route claims, tool pins;
//!   grants (`agent share`) are in [`grant_store`], managed by route owners
//!   through [`grants_api`].
//! * [`oauth`] — the OAuth 2.1 authorization server (discovery, registration,
//!   login and consent, tokens); its tables are in [`oauth_store`].
//! * [`tool_filter`] — `tools/list` answers filtered per caller; [`pins`] —
//!   tool pinning (rug-pull defence).
//! * [`certs`] — the TLS certificate from files or a local CA; [`acme`] —
//!   from an ACME CA, renewed; [`cert_resolver`] — swapped while serving.
//! * [`metrics`] — Prometheus metrics, served with health checks by
//!   [`admin_http`] on the admin listener.
//! * [`reload`] — policy and certificates read again while running (SIGHUP).
//! * [`settings`] — what `relay serve` can be told: one type for its flags
//!   and the keys of [`config_file`], `relay serve --config relay.toml`: the
//!   file, checked with line numbers, under the command line's flags.
//! * [`affinity`] — an MCP session's requests go to the replica that holds it.
//! * [`server`] — starting and stopping it all; [`cli`] — the `relay`
//!   command line, one module per command.

#![forbid(unsafe_code)]

pub mod acme;
pub mod admin;
pub mod admin_http;
pub mod affinity;
pub mod agents;
pub mod audit;
pub mod audit_chain;
pub mod audit_verify;
pub mod authenticated;
pub mod cert_resolver;
pub mod certs;
pub mod cli;
pub mod config;
pub mod config_file;
pub mod conn_limits;
pub mod cors;
pub mod early_answer;
pub mod error;
pub mod forward;
#[doc(hidden)]
pub mod fuzz;
pub mod gateway;
pub mod grant_store;
pub mod grants_api;
pub mod headers;
pub mod hot_cache;
pub mod http;
pub mod idle_connection;
pub mod ip_key;
pub mod legacy_sessions;
pub mod legacy_sse;
pub mod listener;
pub mod metrics;
pub mod oauth;
pub mod oauth_store;
pub mod origin;
pub mod pidfile;
pub mod pins;
pub mod policies;
pub mod rate_limits;
pub mod registry;
pub mod reload;
pub mod server;
pub mod settings;
pub mod sse_keepalive;
pub mod standing_stream;
pub mod state;
pub mod store;
pub mod token;
pub mod tool_filter;
pub mod trail;

pub use common::{logging, secret_file, signals};
pub use config::{AcmeConfig, RelayConfig, TlsSource};
pub use error::RelayError;
pub use server::{start, RunningRelay};
