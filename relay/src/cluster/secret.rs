//! The secret the nodes of a cluster share (`--cluster-secret-file`).

use std::path::Path;

use crate::RelayError;

/// The least length of a cluster secret, in bytes.
pub const MIN_LEN: usize = 32;

/// The cluster's shared secret, as an HMAC-SHA256 key.
pub struct ClusterSecret {
    #[allow(dead_code)]
    pub(crate) key: ring::hmac::Key,
}

impl ClusterSecret {
    /// Reads the secret from `path` (surrounding whitespace ignored).
    pub fn load(path: &Path) -> Result<ClusterSecret, RelayError> {
        let text = std::fs::read(path).map_err(|source| RelayError::File {
            what: "cannot read the cluster secret",
            path: path.to_path_buf(),
            source,
        })?;
        let secret = text.trim_ascii();
        if secret.len() < MIN_LEN {
            return Err(RelayError::Config(format!(
                "the cluster secret in {} has {} bytes; it needs at least {MIN_LEN} (e.g. `openssl rand -hex 32`)",
                path.display(),
                secret.len()
            )));
        }
        Ok(ClusterSecret {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        })
    }
}
