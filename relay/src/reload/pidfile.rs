//! `<state-dir>/relay.pid`: which process serves a state dir, for
//! `relay reload`.
//!
//! `relay serve` writes its pid there and holds an exclusive lock on the
//! file while it runs (removing it on exit). The lock is what tells a live
//! relay from a stale file left by a crash: `relay reload` signals only a
//! pid whose file is locked, so it never signals an unrelated process that
//! got the pid later.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use crate::error::RelayError;

/// The pid file of a serving relay; removed when dropped.
pub struct PidFile {
    path: PathBuf,
    _file: File,
}

/// Where the pid of the relay serving `state_dir` is written.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("relay.pid")
}

impl PidFile {
    /// Writes this process's pid and locks the file. `Ok(None)`: another
    /// live relay holds it (that one is what `relay reload` reaches).
    pub fn create(state_dir: &Path) -> Result<Option<PidFile>, RelayError> {
        let path = path(state_dir);
        let err = |source| RelayError::File {
            what: "cannot write the pid file",
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(err(e)),
        }
        file.set_len(0).map_err(err)?;
        writeln!(file, "{}", std::process::id()).map_err(err)?;
        Ok(Some(PidFile { path, _file: file }))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The pid of the relay serving `state_dir`, if one runs.
pub fn running(state_dir: &Path) -> Result<u32, RelayError> {
    let path = path(state_dir);
    let none = || {
        RelayError::Reload(format!(
            "no relay is running with state dir {} (no live {})",
            state_dir.display(),
            path.display()
        ))
    };
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(none()),
        Err(source) => {
            return Err(RelayError::File {
                what: "cannot read the pid file",
                path,
                source,
            })
        }
    };
    match file.try_lock_shared() {
        // Nobody holds it: left by a relay that died.
        Ok(()) => return Err(none()),
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(source)) => {
            return Err(RelayError::File {
                what: "cannot lock the pid file",
                path,
                source,
            })
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|source| RelayError::File {
            what: "cannot read the pid file",
            path: path.clone(),
            source,
        })?;
    text.trim()
        .parse()
        .map_err(|_| RelayError::Reload(format!("{} holds no pid: {text:?}", path.display())))
}

/// Sends SIGHUP to `pid`.
pub fn signal_reload(pid: u32) -> Result<(), RelayError> {
    #[cfg(unix)]
    {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let raw = i32::try_from(pid)
            .map_err(|_| RelayError::Reload(format!("pid {pid} is out of range")))?;
        kill(Pid::from_raw(raw), Signal::SIGHUP)
            .map_err(|e| RelayError::Reload(format!("cannot signal relay {pid}: {e}")))
    }
    #[cfg(not(unix))]
    {
        Err(RelayError::Reload(format!(
            "cannot signal relay {pid}: reloading needs Unix signals"
        )))
    }
}
