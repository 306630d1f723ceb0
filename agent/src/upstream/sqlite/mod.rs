//! The built-in SQLite MCP server (`agent connect --sqlite FILE`): the MCP
//! tools ([`server`]), the database they use ([`db`]) and its pool of
//! reading connections ([`pool`]); a stateless `tools/call` is answered
//! without rmcp's transport ([`stateless_call`]).

pub mod db;
mod pool;
pub mod server;
pub mod stateless_call;
