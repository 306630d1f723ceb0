//! The relay's config file: `relay serve --config relay.toml`.
//!
//! Every `relay serve` flag has a key (the commented `deploy/relay.toml`
//! shows them all): the same [`Settings`] are read from the file, the
//! flag's name in snake_case, grouped in the tables `[tls]`, `[acme]`,
//! `[limits]` and `[oauth]`. Precedence, highest first: the command line,
//! then environment variables (`DRAWBRIDGE_STATE_DIR`,
//! `DRAWBRIDGE_PUBLIC_URL`…), then the file, then the built-in defaults
//! ([`Settings::overlay`]). Relative paths in the file are relative to the
//! file's directory.
//!
//! The file is checked as a whole before anything starts: unknown keys are
//! refused, values are parsed like the flags' (durations with `humantime`,
//! rates as [`Rate`](crate::limits::rate::Rate), socket addresses), and the
//! files it names are read (the certificate and key must parse and fit, the
//! policy must compile). Every error names the file, the line and column,
//! and the key.
//!
//! Two settings are secrets, `oauth.oidc_client_secret` and
//! `oauth.github_client_secret` (better given in the environment,
//! `DRAWBRIDGE_OIDC_CLIENT_SECRET`, `DRAWBRIDGE_GITHUB_CLIENT_SECRET`): they
//! are held as [`Secret`](crate::config::oauth::Secret)s, which `Debug`
//! does not show.
//! The TLS key is named by its path, never inlined.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::DeTable;

use crate::config::settings::Settings;
use crate::config::TlsSource;

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A problem at a place in the file: `file:line:column: key: message`.
    #[error("{}:{line}:{column}: {}{message}", path.display(), key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default())]
    At {
        path: PathBuf,
        line: usize,
        column: usize,
        /// The dotted key (`limits.max_body`); `None` for a syntax error.
        key: Option<String>,
        message: String,
    },
    /// Something missing from the file as a whole.
    #[error("{}: {message}", path.display())]
    Incomplete { path: PathBuf, message: String },
}

/// A loaded and checked config file.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    settings: Settings,
    /// Where each key the file sets (dotted: `limits.max_body`) has its
    /// value.
    keys: BTreeMap<String, Range<usize>>,
}

impl ConfigFile {
    /// Reads and checks `path`, and the files it names.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let at = |span: Range<usize>, key: Option<&str>, message: String| {
            let (line, column) = line_column(&text, span.start);
            ConfigFileError::At {
                path: path.to_path_buf(),
                line,
                column,
                key: key.map(str::to_owned),
                message,
            }
        };
        let table = DeTable::parse(&text)
            .map_err(|e| at(e.span().unwrap_or(0..0), None, e.message().to_owned()))?;
        let mut settings: Settings = toml::from_str(&text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            at(
                span.clone(),
                key_at(table.get_ref(), span.start).as_deref(),
                e.message().replacen("unknown field", "unknown key", 1),
            )
        })?;
        let keys = value_spans(table.get_ref());
        let span = |key: &str| keys.get(key).cloned().unwrap_or(0..0);

        // Relative paths are relative to the file.
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut settings.policy,
            &mut settings.tls.tls_cert,
            &mut settings.tls.tls_key,
            &mut settings.state_dir.state_dir,
        ]
        .into_iter()
        .flatten()
        {
            *p = base.join(&*p);
        }

        let tls = &settings.tls;
        match (&tls.tls_cert, &tls.tls_key, tls.self_signed) {
            (Some(_), Some(_), true) => {
                return Err(at(
                    span("tls.self_signed"),
                    Some("tls.self_signed"),
                    "cannot be true together with tls.cert and tls.key".into(),
                ))
            }
            (Some(_), None, _) => {
                return Err(at(
                    span("tls.cert"),
                    Some("tls.cert"),
                    "tls.key is needed too".into(),
                ))
            }
            (None, Some(_), _) => {
                return Err(at(
                    span("tls.key"),
                    Some("tls.key"),
                    "tls.cert is needed too".into(),
                ))
            }
            (Some(cert), Some(key), false) => {
                crate::tls::certs::from_files(cert, key)
                    .map_err(|e| e.to_string())
                    .and_then(|k| {
                        tunnel::tls::server_config(k.chain, k.key, &[]).map_err(|e| e.to_string())
                    })
                    .map_err(|e| at(span("tls.cert"), Some("tls.cert"), e))?;
            }
            _ => {}
        }
        // ACME is one more certificate: never silently outranked by another.
        if settings.acme.acme_domain.is_some() {
            let other = match (&tls.tls_cert, tls.self_signed) {
                (Some(_), _) => Some("tls.cert and tls.key (remove one or the other)"),
                (None, true) => Some(
                    "tls.self_signed = true (set self_signed = false for a certificate from ACME)",
                ),
                (None, false) => None,
            };
            if let Some(other) = other {
                return Err(at(
                    span("acme.domain"),
                    Some("acme.domain"),
                    format!("cannot be used together with {other}"),
                ));
            }
        }
        if let Some(path) = &settings.policy {
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|text| {
                    policy::Policy::from_cedar_text(&text, &path.display().to_string())
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| at(span("policy"), Some("policy"), e))?;
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            settings,
            keys,
        })
    }

    /// [`ConfigFile::load`], and the file must be enough to start the relay
    /// on its own: what `relay config check` runs.
    pub fn check(path: &Path) -> Result<ConfigFile, ConfigFileError> {
        let file = ConfigFile::load(path)?;
        if file.settings.certificate().is_none() {
            return Err(ConfigFileError::Incomplete {
                path: path.to_path_buf(),
                message: "no certificate: set acme.domain and acme.email, tls.cert and tls.key, or tls.self_signed = true"
                    .into(),
            });
        }
        Ok(file)
    }

    /// The settings: the file's, the built-in defaults for the keys it does
    /// not set.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// [`ConfigFile::settings`], to lay under the command line's
    /// ([`Settings::overlay`]).
    pub fn into_settings(self) -> Settings {
        self.settings
    }

    /// Whether the file sets `key` (dotted for tables: `tls.cert`).
    pub fn sets(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// One line for `relay config check`: the file is fine, and the settings
    /// that matter most.
    pub fn summary(&self) -> String {
        let s = &self.settings;
        let set = |key: &str, value: String| {
            if self.sets(key) {
                value
            } else {
                "default".into()
            }
        };
        let tls = match s.certificate() {
            Some(TlsSource::Files { cert, .. }) => cert.display().to_string(),
            Some(TlsSource::SelfSigned) => "self-signed".into(),
            Some(TlsSource::Acme(a)) => format!("ACME for {}", a.domain),
            None => "from the command line".into(),
        };
        format!(
            "{}: OK (listen {}, public URL {}, TLS {tls}, state dir {}, policy {})",
            self.path.display(),
            set("listen", s.listen.to_string()),
            s.public_url.clone().unwrap_or_else(|| "default".into()),
            set("state_dir", s.state_dir.path().display().to_string()),
            s.policy
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".into()),
        )
    }
}

/// Where the value of each key of `table` is, by dotted key (one level of
/// tables: the file has no deeper ones).
fn value_spans(table: &DeTable<'_>) -> BTreeMap<String, Range<usize>> {
    let mut spans = BTreeMap::new();
    for (k, v) in table.iter() {
        match v.get_ref().as_table() {
            Some(inner) => spans.extend(
                inner
                    .iter()
                    .map(|(ik, iv)| (format!("{}.{}", k.get_ref(), ik.get_ref()), iv.span())),
            ),
            None => {
                spans.insert(k.get_ref().to_string(), v.span());
            }
        }
    }
    spans
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The dotted key whose name or value covers byte `offset`, deepest first.
fn key_at(table: &DeTable<'_>, offset: usize) -> Option<String> {
    for (k, v) in table.iter() {
        if let Some(inner) = v.get_ref().as_table() {
            if let Some(key) = key_at(inner, offset) {
                return Some(format!("{}.{key}", k.get_ref()));
            }
        }
        if k.span().contains(&offset) || v.span().contains(&offset) {
            return Some(k.get_ref().to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // "é" is two bytes, one column.
        assert_eq!(line_column(text, 11), (2, 5));
        assert_eq!(line_column(text, text.len()), (3, 1));
    }
}
