//! What a Drawbridge route's traffic means, and whether it may pass. Pure:
//! no sockets, no files, no clock (callers pass the time), so that the relay
//! and the agent decide with exactly the same code, and so that every parser
//! here can be fuzzed.
//!
//! * [`jsonrpc`] — an MCP JSON-RPC body classified message by message:
//!   method, target (tool, prompt, resource), arguments, and the 2026-07-28
//!   `Mcp-Method`/`Mcp-Name` header checks.
//! * [`sql`] — what a piece of SQL really does (sqlparser, SQLite dialect):
//!   statement kinds, read-only or not, tables, functions.
//! * [`engine`] — the Cedar engine: [`Policy`] (from Cedar text or from the
//!   simple flags), [`Engine`] (owner's and organisation's policies),
//!   [`Decision`].
//! * [`route_path`] — the methods and paths a route takes at all (no dot
//!   segments; an MCP route is its own URL, POST/GET/DELETE).
//! * [`body`] — a whole body decided ([`Engine::decide_body`]) and the
//!   JSON-RPC errors that answer a refused one ([`body::denial`]).

#![forbid(unsafe_code)]

pub mod body;
pub mod engine;
#[doc(hidden)]
pub mod fuzz;
pub mod jsonrpc;
pub mod reading;
pub mod route_path;
pub mod sql;

pub use engine::*;
