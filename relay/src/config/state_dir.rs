//! `--state-dir`, which every command but `config check` takes, and the
//! state store it opens.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

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

/// The state store of `state`'s directory.
pub fn open(state: &StateDir) -> anyhow::Result<Store> {
    let dir = state.path();
    Store::open(&dir).with_context(|| format!("cannot open the state in {}", dir.display()))
}

/// Runs a store operation to completion from a command (the store is
/// async; a command has no runtime of its own).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        // Without a runtime the store runs its statements where it is called.
        Err(_) => futures::executor::block_on(f),
    }
}
