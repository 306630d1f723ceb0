//! Python scripts in `tests/python/`, run with the venv `scripts/test.sh`
//! installs `tests/requirements.txt` into (the official `mcp` SDK).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The venv's Python: `$VIRTUAL_ENV`, else `.venv-tests` at the repository root.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("VIRTUAL_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-tests"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh, which installs tests/requirements.txt into .venv-tests",
        python.display()
    );
    python
}

/// Runs `tests/python/<script>` with `args` (killed if it takes over two
/// minutes), asserts that it succeeded, and returns the JSON object it
/// printed on its last line of stdout.
pub async fn run_json(script: &str, args: &[OsString]) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python())
            .arg(&path)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{script} did not finish within 120s"))
    .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} {args:?} failed:\n{stderr}");
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{script}: last line is not JSON ({e}): {stdout}\n{stderr}"))
}
