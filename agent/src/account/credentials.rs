//! The agent credentials `agent login` stores, one per relay, in
//! `<config dir>/drawbridge/credentials.json` (`$XDG_CONFIG_HOME` or
//! `~/.config` on Linux): readable by the user only (mode 0600, in a 0700
//! directory), and replaced atomically (written to a new file, then renamed
//! over the old one), so a crash never leaves half a file.
//!
//! ```json
//! {"relays": {"https://relay.example.com": {"token": "dbat_…", "owner":
//!   "alice@example.com", "token_id": "…", "ca_cert": null, "created_at": 1790000000}}}
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::AgentError;

/// The agent credential for one relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The agent token (`dbat_…`).
    pub token: String,
    /// Whose it is (the email the relay knows).
    pub owner: String,
    /// Its id at the relay (`relay token revoke ID`).
    pub token_id: String,
    /// The CA certificate trusted for this relay at login, if any.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Unix seconds.
    pub created_at: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    #[serde(default)]
    relays: BTreeMap<String, Credential>,
}

/// The credentials file.
pub struct Credentials {
    path: PathBuf,
}

/// How a relay is named in the file: `https://host[:port]` (the URL's
/// origin, so that `https://r/` and `https://r` are one relay).
pub fn relay_key(relay: &url::Url) -> String {
    relay.origin().ascii_serialization()
}

impl Credentials {
    /// The user's credentials file.
    pub fn default_location() -> Result<Credentials, AgentError> {
        let dir = dirs::config_dir().ok_or_else(|| AgentError::Credentials {
            path: "(config dir)".into(),
            reason: "this system has no per-user config directory (set XDG_CONFIG_HOME)".into(),
        })?;
        Ok(Credentials::at(
            dir.join("drawbridge").join("credentials.json"),
        ))
    }

    pub fn at(path: PathBuf) -> Credentials {
        Credentials { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, reason: impl std::fmt::Display) -> AgentError {
        AgentError::Credentials {
            path: self.path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    fn read(&self) -> Result<File, AgentError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.error(e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// The credential stored for `relay`.
    pub fn get(&self, relay: &url::Url) -> Result<Option<Credential>, AgentError> {
        Ok(self.read()?.relays.remove(&relay_key(relay)))
    }

    /// Every relay with a stored credential, and its credential.
    pub fn all(&self) -> Result<Vec<(String, Credential)>, AgentError> {
        Ok(self.read()?.relays.into_iter().collect())
    }

    /// Stores (or replaces) the credential for `relay`.
    pub fn save(&self, relay: &url::Url, credential: Credential) -> Result<(), AgentError> {
        let mut file = self.read()?;
        file.relays.insert(relay_key(relay), credential);
        let text = serde_json::to_vec_pretty(&file).map_err(|e| self.error(e))?;
        let dir = self
            .path
            .parent()
            .ok_or_else(|| self.error("has no parent directory"))?;
        create_private_dir(dir)
            .map_err(|e| self.error(format!("cannot create its directory: {e}")))?;
        let tmp = dir.join(format!(
            ".credentials.json.{}.{}",
            std::process::id(),
            common::random_hex(4)
        ));
        let written = (|| {
            let mut f = create_private_file(&tmp)?;
            f.write_all(&text)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            // The rename itself survives a crash once the directory is synced.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok::<(), std::io::Error>(())
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.error(e));
        }
        Ok(())
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(token: &str) -> Credential {
        Credential {
            token: token.into(),
            owner: "alice@example.com".into(),
            token_id: "abc".into(),
            ca_cert: None,
            created_at: 1,
        }
    }

    #[test]
    fn credentials_are_kept_per_relay_in_a_private_file() {
        let dir = std::env::temp_dir().join(format!("dba-creds-{}", common::random_hex(6)));
        let store = Credentials::at(dir.join("drawbridge").join("credentials.json"));
        let a = url::Url::parse("https://relay.example.com/").expect("url");
        let a2 = url::Url::parse("https://relay.example.com").expect("url");
        let b = url::Url::parse("https://127.0.0.1:8443").expect("url");
        assert_eq!(store.get(&a).expect("read"), None);
        store.save(&a, cred("dbat_1")).expect("save");
        store.save(&b, cred("dbat_2")).expect("save");
        store.save(&a2, cred("dbat_3")).expect("replace");
        assert_eq!(store.get(&a).expect("read"), Some(cred("dbat_3")));
        assert_eq!(store.get(&b).expect("read"), Some(cred("dbat_2")));
        assert_eq!(store.all().expect("all").len(), 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode(store.path()), 0o600);
            assert_eq!(mode(&dir.join("drawbridge")), 0o700);
        }
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.join("drawbridge"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["credentials.json"]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
