//! Real MCP clients from npm (`tests/node/`, installed by `scripts/test.sh`
//! with `npm ci`): the official TypeScript SDK and `mcp-remote`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `tests/node`, where `package.json` and `node_modules/` live.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node")
}

/// A binary that npm installed into `tests/node/node_modules/.bin`.
pub fn bin(name: &str) -> PathBuf {
    let path = dir().join("node_modules/.bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh, which installs tests/node with npm ci",
        path.display()
    );
    path
}

/// Runs `node tests/node/<script> args…` with `NODE_EXTRA_CA_CERTS=ca` (so
/// Node trusts the relay's test CA), killed if it takes over two minutes;
/// asserts that it succeeded and returns the JSON object of its last line.
pub async fn run_json(script: &str, ca: &Path, args: &[OsString]) -> serde_json::Value {
    bin("mcp-remote"); // the same npm ci installed the SDK: fail early with the hint
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(dir().join(script))
            .args(args)
            .env("NODE_EXTRA_CA_CERTS", ca)
            .current_dir(dir())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{script} did not finish within 120s"))
    .unwrap_or_else(|e| panic!("cannot run node {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{stdout}\n{stderr}"
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{script}: last line is not JSON ({e}): {stdout}\n{stderr}"))
}
