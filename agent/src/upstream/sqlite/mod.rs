//! The built-in SQLite MCP server (`agent connect --sqlite FILE`): the MCP
//! tools ([`server`]), the database they use ([`db`]) and its pool of
//! reading connections ([`pool`]).

pub mod db;
mod pool;
pub mod server;
