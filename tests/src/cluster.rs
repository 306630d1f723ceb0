//! Relay nodes on one PostgreSQL database ([`crate::postgres`]): each node
//! its own state dir (audit log, pid file) and port, all with the same
//! self-signed CA, so that one client and one agent trust them all.

use std::sync::Arc;

use crate::{RelayProc, TempDir};

/// Starts `n` relay nodes on the database at `url`, with `extra` flags each.
pub async fn start_nodes(url: &str, n: usize, extra: &[&str]) -> Vec<RelayProc> {
    let mut args = vec!["--database-url", url];
    args.extend_from_slice(extra);
    let first = RelayProc::start(&args).await;
    let mut nodes = vec![first];
    for _ in 1..n {
        let state = Arc::new(TempDir::new("relay"));
        for file in ["ca.pem", "ca.key"] {
            std::fs::copy(nodes[0].state.path().join(file), state.path().join(file))
                .unwrap_or_else(|e| panic!("copy the CA's {file}: {e}"));
        }
        nodes.push(RelayProc::start_with(state, "127.0.0.1:0", &args).await);
    }
    nodes
}
