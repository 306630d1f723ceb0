//! `agent connect` without `--relay`: a complete local setup in one process.
//!
//! A relay starts in-process on loopback with a self-signed certificate and
//! its state in the user's data dir. The agent and client tokens are kept
//! there too (mode 0600), so the URL and token a person configured in their
//! MCP client keep working across restarts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use relay::{RelayConfig, RunningRelay, Store, TlsSource, TokenKind};

use crate::error::AgentError;

/// The identity that owns everything in an embedded relay.
pub const OWNER: &str = "owner@localhost";

/// A running embedded relay and the credentials to use it.
pub struct Embedded {
    pub relay: RunningRelay,
    pub agent_token: String,
    pub client_token: String,
    pub ca_path: PathBuf,
}

/// Where the embedded relay keeps its state by default.
pub fn default_state_dir() -> PathBuf {
    dirs::data_local_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("drawbridge")
        .join("embedded-relay")
}

/// Starts the embedded relay on `listen` with state in `state_dir`.
pub async fn start(listen: SocketAddr, state_dir: &Path) -> Result<Embedded, AgentError> {
    let config = RelayConfig::new(listen, state_dir.to_path_buf(), TlsSource::SelfSigned);
    let relay = relay::start(config).await?;
    let store = &relay.state.store;
    let agent_token = kept_token(store, state_dir, TokenKind::Agent, "embedded-agent").await?;
    let client_token = kept_token(store, state_dir, TokenKind::Client, "embedded-client").await?;
    let ca_path = relay
        .ca_path
        .clone()
        .ok_or_else(|| AgentError::Config("the embedded relay has no CA".into()))?;
    Ok(Embedded {
        relay,
        agent_token,
        client_token,
        ca_path,
    })
}

/// Reuses the token saved in `state_dir` if it is still valid, else makes one.
async fn kept_token(
    store: &Store,
    state_dir: &Path,
    kind: TokenKind,
    name: &str,
) -> Result<String, AgentError> {
    let file = state_dir.join(format!("{name}.token"));
    if let Ok(saved) = std::fs::read_to_string(&file) {
        let saved = saved.trim().to_owned();
        if matches!(store.verify(&saved).await, Ok(r) if r.kind == kind) {
            return Ok(saved);
        }
    }
    let (_, secret) = store
        .create_token(kind, OWNER, name, None)
        .await
        .map_err(relay::RelayError::from)?;
    write_private(&file, secret.expose())?;
    Ok(secret.expose().to_owned())
}

fn write_private(path: &Path, data: &str) -> Result<(), AgentError> {
    let err =
        |e: std::io::Error| AgentError::Config(format!("cannot write {}: {e}", path.display()));
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        f.write_all(data.as_bytes()).map_err(err)?;
    }
    #[cfg(not(unix))]
    std::fs::write(path, data).map_err(err)?;
    Ok(())
}
