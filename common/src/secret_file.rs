//! Secrets read from a file (`agent connect --token-file`), so that they
//! stay off the command line, where every user of the machine can read them
//! (`ps`, `/proc/<pid>/cmdline`) and shells keep them in their history.

use std::path::{Path, PathBuf};

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read the secret file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the secret file {} is empty (its first line is the secret)", path.display())]
    Empty { path: PathBuf },
}

/// The secret in `path`: its first line, without surrounding whitespace
/// (files written with `echo` end with a newline).
pub fn read(path: &Path) -> Result<String, SecretFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let secret = text.lines().next().unwrap_or("").trim();
    if secret.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(secret.to_owned())
}

/// The warning for a secret given on the command line as `flag`, with the
/// ways to give it instead.
pub fn command_line_warning(flag: &str, instead: &str) -> String {
    format!(
        "warning: {flag} on the command line is visible to every user of this machine \
         (ps, /proc) and stays in shell history; use {instead} instead"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_is_the_secret() {
        let dir = std::env::temp_dir().join(format!("dbr-secret-{}", crate::random_hex(6)));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("token");
        std::fs::write(&f, "dbat_abc123\n").expect("write");
        assert_eq!(read(&f).expect("read"), "dbat_abc123");
        std::fs::write(&f, "  dbat_abc123  \r\nsomething else\n").expect("write");
        assert_eq!(read(&f).expect("read"), "dbat_abc123");
        std::fs::write(&f, "\n").expect("write");
        assert!(matches!(read(&f), Err(SecretFileError::Empty { .. })));
        assert!(matches!(
            read(&dir.join("missing")),
            Err(SecretFileError::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
