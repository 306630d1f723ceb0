//! The Drawbridge agent: the laptop side of the tunnel.
//!
//! `agent connect` dials OUT to a relay ([`dial`]: QUIC raced against TLS over
//! TCP), says hello ([`session`]), and serves each stream the relay opens from
//! a local server, a stdio MCP server run as a child ([`stdio`]) or the
//! built-in SQLite MCP server ([`upstream`], [`sqlite_server`],
//! [`sqlite_db`]). It reconnects with backoff ([`backoff`]) and, with no
//! `--relay`, runs a relay in-process ([`embedded`]). Every exchange is
//! decided again with the owner's policy first ([`gate`]), and shown on the
//! owner's live page with `--inspect` ([`inspector`]).
//!
//! `agent login` signs the agent in at a relay with the device grant
//! ([`login`]) and keeps the credential ([`credentials`]); `agent share`
//! manages grants on the owner's routes ([`share`]), both through the relay's
//! HTTP API ([`relay_api`]).

#![forbid(unsafe_code)]

pub use tunnel::backoff;
pub mod connect;
pub mod credentials;
pub mod dial;
#[cfg(feature = "embedded-relay")]
pub mod embedded;
pub mod error;
pub mod gate;
pub mod inspector;
pub mod login;
pub mod mcp_http;
pub mod mcp_sessions;
pub mod per_identity;
pub mod relay_api;
mod reply;
pub mod response_cap;
pub mod session;
pub mod share;
pub mod sqlite_db;
mod sqlite_pool;
pub mod sqlite_server;
pub mod stdio;
pub mod tui;
pub mod upstream;

pub use connect::{run, ConnectOptions, TransportChoice};
pub use error::AgentError;
