//! The relay's state database (`relay.db`, its `-wal` and `-shm`) and audit
//! files are owner-only (0600) whatever the umask, and a mode the relay
//! cannot set stops it rather than leaving the files readable.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use e2e::procs::{bin, Proc};
use e2e::TempDir;

/// `relay serve` on a free port with `state` as its state dir, started by a
/// shell with umask 000 (which first creates `probe` to show the umask).
fn relay_with_umask_000(state: &Path) -> Proc {
    let args: Vec<String> = [
        "-c",
        r#"umask 000 && : > "$PROBE" && exec "$0" "$@""#,
        &bin("relay").display().to_string(),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--self-signed",
        "--admin-listen",
        "off",
        "--state-dir",
        &state.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let probe = state.join("probe").display().to_string();
    Proc::spawn("relay", Path::new("/bin/sh"), &args, &[("PROBE", &probe)])
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_database_and_audit_files_are_0600_under_umask_000() {
    let state = TempDir::new("private-state");
    let mut relay = relay_with_umask_000(state.path());
    relay
        .wait_stdout("listening on", Duration::from_secs(20))
        .await;
    // The umask really was 000 for the relay.
    assert_eq!(mode(&state.path().join("probe")), 0o666);
    for name in [
        "relay.db",
        "relay.db-wal",
        "relay.db-shm",
        "audit.jsonl",
        "audit.lock",
        "audit.head",
    ] {
        assert_eq!(
            mode(&state.path().join(name)),
            0o600,
            "{name} is not owner-only"
        );
    }
    relay.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_whose_mode_cannot_be_set_stops_the_relay() {
    let state = TempDir::new("private-state-chmod");
    // procfs refuses chmod, even to root: the relay must not go on with a
    // database it could not make private.
    std::os::unix::fs::symlink("/proc/self/status", state.path().join("relay.db"))
        .expect("symlink");
    let mut relay = relay_with_umask_000(state.path());
    let code = relay.wait_exit(Duration::from_secs(20)).await;
    assert!(
        code.is_some_and(|c| c != 0),
        "the relay started: {code:?} {}",
        relay.stderr_text()
    );
    let err = relay.stderr_text();
    assert!(
        err.contains("cannot make private (chmod 600)") && err.contains("relay.db"),
        "{err}"
    );
}
