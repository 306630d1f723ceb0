//! Harness for the end-to-end tests: the real `relay` and `agent` binaries on
//! loopback (port 0), a scriptable local HTTP server, an HTTPS document
//! server with its own CA, and an HTTPS client that
//! trusts the relay's self-signed CA. Every child process is killed when its
//! guard is dropped, so a failing test leaves nothing behind.

pub mod browser;
pub mod changing_server;
pub mod chromium;
pub mod client;
pub mod cluster;
pub mod cluster_audit;
pub mod documents;
pub mod freezing_proxy;
pub mod github_standin;
pub mod loopback_site;
pub mod mcp;
pub mod netsim;
pub mod node;
pub mod oauth_app;
pub mod oidc_provider;
pub mod pebble;
pub mod postgres;
pub mod procs;
pub mod python;
pub mod upstream;
pub mod upstream_sign_in;

pub use client::HttpsClient;
pub use procs::{AgentProc, RelayProc};
pub use upstream::Upstream;

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("drawbridge-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Resident memory of a process, in KiB: (current, peak).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
