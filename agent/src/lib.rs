//! The Drawbridge agent: the laptop side of the tunnel. Its folders are its
//! layers, each using only those below it:
//!
//! * [`cli`] — the `agent` command line, one module per command.
//! * `account` — `agent login` signs the agent in at a relay with the device
//!   grant and keeps the credential; `agent share` manages grants on the
//!   owner's routes, both through the relay's HTTP API.
//! * `tunnel` — `agent connect` dials OUT to a relay (QUIC raced against TLS
//!   over TCP), says hello, serves each stream the relay opens, and
//!   reconnects with backoff; with no `--relay` (cargo feature
//!   `embedded-relay`, on by default) it runs a relay in-process.
//! * `gate` — every exchange is decided again with the owner's policy first.
//! * `upstream` — what serves a stream: a local HTTP server, a stdio MCP
//!   server run as a child, or the built-in SQLite MCP server.
//! * `inspector` — the owner's live page of the exchanges (`--inspect`).
//! * `report`, `reply`, `error` — what every layer shares: the summary of an
//!   exchange and the live line, the agent's own answers, the errors;
//!   `common::lines` writes the live lines off the requests' path.

#![forbid(unsafe_code)]

use ::tunnel::backoff;

mod account;
pub mod cli;
mod error;
mod gate;
mod inspector;
mod reply;
mod report;
mod tunnel;
mod upstream;

pub use crate::tunnel::connect::{run, ConnectOptions};
pub use crate::tunnel::dial::{Dialer, TransportChoice};
pub use crate::tunnel::session;
pub use account::credentials::{Credential, Credentials};
pub use error::{AgentError, DialError};
pub use gate::{Gate, OwnerPolicy};
pub use report::{live_line, Reporter, RequestLine, Summary};
pub use upstream::sqlite::db::{Limits as SqliteLimits, SqliteDb};
pub use upstream::sqlite::server::{HttpService as SqliteHttpService, SqliteServer};
pub use upstream::sqlite::stateless_call;
pub use upstream::stdio::{orphan_guard, StdioLimits};
pub use upstream::Upstream;
