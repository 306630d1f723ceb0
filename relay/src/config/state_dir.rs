//! `--state-dir`, which every command but `config check` takes, and the
//! state store it opens (with `--database-url`, the admin commands' view of
//! [`Database`]).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::config::database::Database;
use crate::store::Store;

#[derive(Debug, Clone, Args, serde::Deserialize)]
#[serde(transparent)]
pub struct StateDir {
    /// Where the relay keeps its state (SQLite database, certificates).
    /// Default: ~/.local/share/drawbridge/relay (the user's data dir).
    #[arg(long, env = "DRAWBRIDGE_STATE_DIR")]
    pub(crate) state_dir: Option<PathBuf>,
}

impl StateDir {
    pub fn path(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| {
            dirs::data_local_dir()
                .map(|d| d.join("drawbridge").join("relay"))
                .unwrap_or_else(|| PathBuf::from("drawbridge-relay"))
        })
    }
}

/// Where an admin command finds the state store: the state directory, or
/// the PostgreSQL database of `--database-url`.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub state: StateDir,
    #[command(flatten)]
    pub database: Database,
}

impl StoreArgs {
    /// The state directory.
    pub fn path(&self) -> PathBuf {
        self.state.path()
    }
}

/// The state store `args` name.
pub fn open(args: &StoreArgs) -> anyhow::Result<Store> {
    let dir = args.path();
    match &args.database.database_url {
        None => {
            Store::open(&dir).with_context(|| format!("cannot open the state in {}", dir.display()))
        }
        Some(url) => block_on(crate::store::backend::open(&dir, Some(url.expose())))
            .context("cannot open the state store (--database-url)"),
    }
}

/// Runs a store operation to completion from a command (the store is
/// async; a command has no runtime of its own). One runtime for the whole
/// command: a PostgreSQL store's connections live on the runtime that
/// opened them.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RUNTIME: std::sync::OnceLock<Option<tokio::runtime::Runtime>> =
        std::sync::OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()
    });
    match runtime {
        Some(rt) => rt.block_on(f),
        // Without a runtime the store runs its statements where it is called.
        None => futures::executor::block_on(f),
    }
}
