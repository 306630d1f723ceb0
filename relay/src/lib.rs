//! The Drawbridge relay: the server a person self-hosts. Its folders are its
//! layers:
//!
//! * [`cli`] — the `relay` command line, one module per command.
//! * `config` — what `relay serve` can be told: one settings type for its
//!   flags and the keys of the config file (`relay serve --config
//!   relay.toml`, checked with line numbers), validated into [`RelayConfig`].
//! * `server` — starting and stopping it all; the one port (HTTPS and the
//!   TLS tunnel on TCP, told apart by ALPN; the QUIC tunnel on UDP); the
//!   agents' tunnels (handshake, control stream, keep-alives, GoAway); idle
//!   connections; the admin listener (metrics, health).
//! * `gateway` — the request path as phases: authenticate → route →
//!   classify → decide (a pure function) → forward, audited (the trail);
//!   every refusal is one `Refusal`. With it: `tools/list` filtered per
//!   caller, tool pinning (rug-pull defence), the legacy HTTP+SSE transport
//!   and the grants API that `agent share` calls.
//! * `agents` — the agents as the request path sees them: which sessions
//!   serve which routes; carrying a request to one and its answer back
//!   ([`forward`]).
//! * `sessions` — the MCP sessions the relay keeps: which replica holds each
//!   (session affinity), the legacy HTTP+SSE transport's open streams.
//! * `oauth` — the OAuth 2.1 authorization server (discovery, registration,
//!   login and consent, tokens, the device grant, upstream sign-in).
//! * `store` — the state (the `store` crate's backend) behind the lookups the
//!   request path makes: tokens, routes, grants, pins, the OAuth tables.
//! * `audit` — the hash-chained audit log and its verification.
//! * `tls` — the certificate from files or a local CA ([`certs`]), or from
//!   an ACME CA and renewed, swapped while serving.
//! * `limits` — request rates and per-address connection bounds.
//! * `http` — the HTTP pieces every part shares (bodies, JSON answers,
//!   content types, the SSE event splitter, edge headers, origins, CORS); it
//!   imports nothing else of the relay.
//! * `reload` — policy and certificates read again while running (SIGHUP,
//!   `relay reload`, which finds the relay by `<state-dir>/relay.pid`).
//! * `state`, `policies`, `metrics`, `error` — what every layer shares: the
//!   running relay's state, its policy engines, Prometheus metrics, the
//!   errors.

#![forbid(unsafe_code)]

mod agents;
mod audit;
pub mod cli;
mod cluster;
mod config;
mod error;
#[doc(hidden)]
pub mod fuzz;
mod gateway;
mod http;
mod identity;
mod limits;
mod metrics;
mod oauth;
mod policies;
mod reload;
mod server;
mod sessions;
mod state;
mod store;
mod tls;

use common::{secret_file, signals};

pub use agents::forward;
pub use agents::registry::AgentSession;
pub use common::logging;
pub use config::file::{ConfigFile, ConfigFileError};
pub use config::settings::Settings;
pub use config::{AcmeConfig, RelayConfig, TlsSource};
pub use error::RelayError;
pub use metrics::Metrics;
pub use server::{start, RunningRelay};
pub use store::token::TokenKind;
pub use store::Store;
pub use tls::certs;
