//! `--database-url` (`[database] url`): where the relay's state lives when
//! it is not the SQLite file of the state directory. A PostgreSQL URL puts
//! it in a database several relay nodes share (see docs/cluster.md).

use clap::Args;
use serde::Deserialize;

use crate::config::oauth::Secret;

/// The flag `relay serve` and every admin command that opens the state
/// store take.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Database {
    /// Keep the state in this PostgreSQL database
    /// (postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…]; TLS unless
    /// sslmode=disable) instead of SQLite in the state dir: several relays
    /// on one database share tokens, grants, pins, accounts and sign-ins.
    /// The URL may hold a password: better given in the environment
    /// (DRAWBRIDGE_DATABASE_URL) or in the --config file (database.url, the
    /// file kept 0600) than on the command line.
    #[arg(
        long,
        env = "DRAWBRIDGE_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL",
        value_parser = secret,
        display_order = 10
    )]
    #[serde(rename = "url")]
    pub database_url: Option<Secret>,
}

fn secret(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(s))
}

impl crate::config::settings::Overlay for Database {
    fn overlay(&mut self, file: Self, _: &str, given: &dyn Fn(&str) -> bool) {
        if !given("database_url") {
            *self = file;
        }
    }
}
