//! The relay's config file: `relay serve --config relay.toml`.
//!
//! Every `relay serve` flag has a key (see [`KEYS`] and the commented
//! `deploy/relay.toml`): the flag's name in snake_case, grouped in the tables
//! `[tls]`, `[limits]` and `[oauth]`. Precedence, highest first: the command
//! line, then environment variables (`DRAWBRIDGE_STATE_DIR`,
//! `DRAWBRIDGE_PUBLIC_URL`), then the file, then the built-in defaults.
//! Relative paths in the file are relative to the file's directory.
//!
//! The file is checked as a whole before anything starts: unknown keys are
//! refused, values are parsed like the flags' (durations with `humantime`,
//! rates as [`Rate`], socket addresses), and the files it names are read (the
//! certificate and key must parse and fit, the policy must compile). Every
//! error names the file, the line and column, and the key.
//!
//! Two settings are secrets, `oauth.oidc_client_secret` and
//! `oauth.github_client_secret` (better given in the environment,
//! `DRAWBRIDGE_OIDC_CLIENT_SECRET`, `DRAWBRIDGE_GITHUB_CLIENT_SECRET`): they
//! are held as [`Secret`](crate::oauth::upstream::Secret)s, which `Debug`
//! does not show.
//! The TLS key is named by its path, never inlined.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::de::DeTable;
use toml::Spanned;

use crate::logging::LogFormat;
use crate::rate_limits::Rate;
use crate::{RelayConfig, TlsSource};

/// Every key of the file (dotted for tables) and the id of the `relay serve`
/// flag it stands for (the flag's long name in snake_case). The benchmark-only
/// hidden flag has no key.
pub const KEYS: &[(&str, &str)] = &[
    ("listen", "listen"),
    ("public_url", "public_url"),
    ("state_dir", "state_dir"),
    ("log_format", "log_format"),
    ("quic", "no_quic"),
    ("policy", "policy"),
    ("allow_origins", "allow_origins"),
    ("audit_arguments", "audit_arguments"),
    ("audit_rotate_size", "audit_rotate_size"),
    ("response_timeout", "response_timeout"),
    ("keepalive_interval", "keepalive_interval"),
    ("drain_timeout", "drain_timeout"),
    ("sse_keepalive", "sse_keepalive"),
    ("tls.cert", "tls_cert"),
    ("tls.key", "tls_key"),
    ("tls.self_signed", "self_signed"),
    ("limits.max_body", "max_body"),
    ("limits.max_tools_list", "max_tools_list"),
    ("limits.rate_limit_route", "rate_limit_route"),
    ("limits.rate_limit_identity", "rate_limit_identity"),
    ("limits.max_connections_per_ip", "max_connections_per_ip"),
    ("limits.max_routes_per_owner", "max_routes_per_owner"),
    (
        "limits.max_quic_handshakes_per_ip",
        "max_quic_handshakes_per_ip",
    ),
    ("limits.header_read_timeout", "header_read_timeout"),
    ("limits.http_idle_timeout", "http_idle_timeout"),
    ("limits.body_read_timeout", "body_read_timeout"),
    ("oauth.access_token_ttl", "access_token_ttl"),
    ("oauth.refresh_token_ttl", "refresh_token_ttl"),
    ("oauth.device_code_ttl", "device_code_ttl"),
    ("oauth.device_poll_interval", "device_poll_interval"),
    ("oauth.cimd", "cimd"),
    ("oauth.cimd_allow_domains", "cimd_allow_domains"),
    ("oauth.cimd_dev_allow_loopback", "cimd_dev_allow_loopback"),
    ("oauth.cimd_ca", "cimd_ca"),
    ("oauth.oidc_issuer", "oidc_issuer"),
    ("oauth.oidc_client_id", "oidc_client_id"),
    ("oauth.oidc_client_secret", "oidc_client_secret"),
    ("oauth.oidc_groups_claim", "oidc_groups_claim"),
    ("oauth.oidc_name", "oidc_name"),
    ("oauth.github_client_id", "github_client_id"),
    ("oauth.github_client_secret", "github_client_secret"),
    (
        "oauth.upstream_dev_allow_http_loopback",
        "upstream_dev_allow_http_loopback",
    ),
    ("acme.domain", "acme_domain"),
    ("acme.email", "acme_email"),
    ("acme.directory", "acme_directory"),
    ("acme.directory_ca", "acme_directory_ca"),
    ("admin_listen", "admin_listen"),
];

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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default, deserialize_with = "parsed")]
    listen: Option<FromText<SocketAddr>>,
    public_url: Option<String>,
    state_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "parsed")]
    log_format: Option<FromText<LogFormatName>>,
    quic: Option<bool>,
    policy: Option<Spanned<PathBuf>>,
    allow_origins: Option<Vec<String>>,
    audit_arguments: Option<bool>,
    audit_rotate_size: Option<u64>,
    #[serde(default, deserialize_with = "parsed")]
    response_timeout: Option<FromText<humantime::Duration>>,
    #[serde(default, deserialize_with = "parsed")]
    keepalive_interval: Option<FromText<humantime::Duration>>,
    #[serde(default, deserialize_with = "parsed")]
    drain_timeout: Option<FromText<humantime::Duration>>,
    #[serde(default, deserialize_with = "parsed")]
    sse_keepalive: Option<FromText<humantime::Duration>>,
    #[serde(default, deserialize_with = "parsed")]
    admin_listen: Option<FromText<AdminAddress>>,
    #[serde(default)]
    tls: Tls,
    #[serde(default)]
    acme: Acme,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    oauth: OAuth,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tls {
    cert: Option<Spanned<PathBuf>>,
    key: Option<Spanned<PathBuf>>,
    self_signed: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Acme {
    domain: Option<String>,
    email: Option<String>,
    directory: Option<String>,
    directory_ca: Option<PathBuf>,
}

/// `admin_listen`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
struct AdminAddress(Option<SocketAddr>);

impl std::str::FromStr for AdminAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(AdminAddress(None));
        }
        s.parse()
            .map(|a| AdminAddress(Some(a)))
            .map_err(|e: std::net::AddrParseError| {
                format!("{e} (an address like 127.0.0.1:9464, or off)")
            })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    max_body: Option<usize>,
    max_tools_list: Option<usize>,
    #[serde(default, deserialize_with = "parsed")]
    rate_limit_route: Option<FromText<Rate>>,
    #[serde(default, deserialize_with = "parsed")]
    rate_limit_identity: Option<FromText<Rate>>,
    max_connections_per_ip: Option<u32>,
    max_routes_per_owner: Option<u32>,
    max_quic_handshakes_per_ip: Option<u32>,
    #[serde(default, deserialize_with = "parsed")]
    header_read_timeout: Option<FromText<humantime::Duration>>,
    #[serde(default, deserialize_with = "parsed")]
    http_idle_timeout: Option<FromText<humantime::Duration>>,
    #[serde(default, deserialize_with = "parsed")]
    body_read_timeout: Option<FromText<humantime::Duration>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OAuth {
    #[serde(default, deserialize_with = "parsed")]
    access_token_ttl: Option<FromText<humantime::Duration>>,
    #[serde(default, deserialize_with = "parsed")]
    refresh_token_ttl: Option<FromText<humantime::Duration>>,
    #[serde(default, deserialize_with = "parsed")]
    device_code_ttl: Option<FromText<humantime::Duration>>,
    #[serde(default, deserialize_with = "parsed")]
    device_poll_interval: Option<FromText<humantime::Duration>>,
    /// `"on"` or `"off"`, as the flag, or a boolean.
    cimd: Option<OnOff>,
    cimd_allow_domains: Option<Vec<String>>,
    cimd_dev_allow_loopback: Option<bool>,
    cimd_ca: Option<PathBuf>,
    oidc_issuer: Option<String>,
    oidc_client_id: Option<String>,
    oidc_client_secret: Option<crate::oauth::upstream::Secret>,
    oidc_groups_claim: Option<String>,
    oidc_name: Option<String>,
    github_client_id: Option<String>,
    github_client_secret: Option<crate::oauth::upstream::Secret>,
    upstream_dev_allow_http_loopback: Option<bool>,
}

/// `"on"`/`"off"` (as the command line says it) or `true`/`false`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum OnOff {
    Bool(bool),
    Word(OnOffWord),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OnOffWord {
    On,
    Off,
}

impl OnOff {
    fn on(self) -> bool {
        matches!(self, OnOff::Bool(true) | OnOff::Word(OnOffWord::On))
    }
}

/// A value written as a string and parsed like the flag's (`"30s"`,
/// `"600/min"`, `"0.0.0.0:443"`).
#[derive(Debug, Clone, Copy)]
struct FromText<T>(T);

/// What each parsed type is called in error messages.
trait Named: FromStr<Err: fmt::Display> {
    const WHAT: &'static str;
    fn invalid(text: &str, e: Self::Err) -> String {
        format!("invalid {} {text:?}: {e}", Self::WHAT)
    }
}
impl Named for SocketAddr {
    const WHAT: &'static str = "address (host:port)";
}
impl Named for humantime::Duration {
    const WHAT: &'static str = "duration";
}
impl Named for Rate {
    const WHAT: &'static str = "rate";
    /// [`Rate`]'s own message names the text already.
    fn invalid(_: &str, e: String) -> String {
        e
    }
}

/// `text` or `json`, as `--log-format` takes.
#[derive(Debug, Clone, Copy)]
struct LogFormatName(LogFormat);
impl FromStr for LogFormatName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <LogFormat as clap::ValueEnum>::from_str(s, false)
            .map(LogFormatName)
            .map_err(|_| "expected \"text\" or \"json\"".to_owned())
    }
}
impl Named for AdminAddress {
    const WHAT: &'static str = "admin address";
}
impl Named for LogFormatName {
    const WHAT: &'static str = "log format";
}

fn parsed<'de, D, T>(d: D) -> Result<Option<FromText<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Named,
{
    let text = String::deserialize(d)?;
    text.parse()
        .map(|v| Some(FromText(v)))
        .map_err(|e| serde::de::Error::custom(T::invalid(&text, e)))
}

fn duration(v: Option<FromText<humantime::Duration>>) -> Option<Duration> {
    v.map(|FromText(d)| d.into())
}

impl ConfigFile {
    /// Reads and checks `path`, and the files it names.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let at = |span: Range<usize>, key: Option<String>, message: String| {
            let (line, column) = line_column(&text, span.start);
            ConfigFileError::At {
                path: path.to_path_buf(),
                line,
                column,
                key,
                message,
            }
        };
        let table = DeTable::parse(&text)
            .map_err(|e| at(e.span().unwrap_or(0..0), None, e.message().to_owned()))?;
        let mut settings: Settings = toml::from_str(&text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            at(
                span.clone(),
                key_at(table.get_ref(), span.start),
                e.message().replacen("unknown field", "unknown key", 1),
            )
        })?;

        // Relative paths are relative to the file.
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut settings.policy,
            &mut settings.tls.cert,
            &mut settings.tls.key,
        ]
        .into_iter()
        .flatten()
        {
            *p.get_mut() = base.join(p.get_ref());
        }
        if let Some(dir) = &mut settings.state_dir {
            *dir = base.join(&*dir);
        }

        let tls = &settings.tls;
        let self_signed = tls.self_signed.as_ref().filter(|s| *s.get_ref());
        match (&tls.cert, &tls.key, self_signed) {
            (Some(_), Some(_), Some(s)) => {
                return Err(at(
                    s.span(),
                    Some("tls.self_signed".into()),
                    "cannot be true together with tls.cert and tls.key".into(),
                ))
            }
            (Some(c), None, _) => {
                return Err(at(
                    c.span(),
                    Some("tls.cert".into()),
                    "tls.key is needed too".into(),
                ))
            }
            (None, Some(k), _) => {
                return Err(at(
                    k.span(),
                    Some("tls.key".into()),
                    "tls.cert is needed too".into(),
                ))
            }
            (Some(cert), Some(key), None) => {
                crate::certs::from_files(cert.get_ref(), key.get_ref())
                    .map_err(|e| e.to_string())
                    .and_then(|k| {
                        tunnel::tls::server_config(k.chain, k.key, &[]).map_err(|e| e.to_string())
                    })
                    .map_err(|e| at(cert.span(), Some("tls.cert".into()), e))?;
            }
            _ => {}
        }
        if let Some(policy) = &settings.policy {
            let path = policy.get_ref();
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|text| {
                    policy::Policy::from_cedar_text(&text, &path.display().to_string())
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| at(policy.span(), Some("policy".into()), e))?;
        }
        Ok(ConfigFile {
            path: path.to_path_buf(),
            settings,
        })
    }

    /// [`ConfigFile::load`], and the file must be enough to start the relay
    /// on its own: what `relay config check` runs.
    pub fn check(path: &Path) -> Result<ConfigFile, ConfigFileError> {
        let file = ConfigFile::load(path)?;
        if file.tls().is_none() {
            return Err(ConfigFileError::Incomplete {
                path: path.to_path_buf(),
                message: "no certificate: set acme.domain and acme.email, tls.cert and tls.key, or tls.self_signed = true"
                    .into(),
            });
        }
        Ok(file)
    }

    /// The certificate the file names, if any.
    pub fn tls(&self) -> Option<TlsSource> {
        let tls = &self.settings.tls;
        match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => Some(TlsSource::Files {
                cert: cert.get_ref().clone(),
                key: key.get_ref().clone(),
            }),
            _ if tls.self_signed.as_ref().is_some_and(|s| *s.get_ref()) => {
                Some(TlsSource::SelfSigned)
            }
            _ => {
                let acme = &self.settings.acme;
                acme.domain.as_ref().map(|domain| {
                    TlsSource::Acme(crate::AcmeConfig {
                        domain: domain.clone(),
                        email: acme.email.clone().unwrap_or_default(),
                        directory: acme
                            .directory
                            .clone()
                            .unwrap_or_else(|| crate::AcmeConfig::LETS_ENCRYPT.to_owned()),
                        directory_ca: acme.directory_ca.clone(),
                        renew_after: None,
                    })
                })
            }
        }
    }

    /// The log format the file asks for, if any.
    pub fn log_format(&self) -> Option<LogFormat> {
        self.settings.log_format.map(|FromText(f)| f.0)
    }

    /// Sets in `config` every setting the file has, except those whose flag
    /// (by id, see [`KEYS`]) `given` says came from the command line or the
    /// environment. The certificate is [`ConfigFile::tls`]'s business.
    pub fn apply(&self, config: &mut RelayConfig, given: &dyn Fn(&str) -> bool) {
        let s = &self.settings;
        let set = |flag: &str| !given(flag);
        fn put<T>(slot: &mut T, value: Option<T>, yes: bool) {
            if let (Some(v), true) = (value, yes) {
                *slot = v;
            }
        }
        put(&mut config.listen, s.listen.map(|a| a.0), set("listen"));
        put(
            &mut config.public_url,
            s.public_url.clone().map(Some),
            set("public_url"),
        );
        put(&mut config.state_dir, s.state_dir.clone(), set("state_dir"));
        put(&mut config.quic, s.quic, set("no_quic"));
        put(
            &mut config.policy,
            s.policy.as_ref().map(|p| Some(p.get_ref().clone())),
            set("policy"),
        );
        put(
            &mut config.allow_origins,
            s.allow_origins.clone(),
            set("allow_origins"),
        );
        put(
            &mut config.audit_arguments,
            s.audit_arguments,
            set("audit_arguments"),
        );
        put(
            &mut config.audit_rotate_size,
            s.audit_rotate_size,
            set("audit_rotate_size"),
        );
        put(
            &mut config.response_timeout,
            duration(s.response_timeout),
            set("response_timeout"),
        );
        put(
            &mut config.keepalive_interval,
            duration(s.keepalive_interval),
            set("keepalive_interval"),
        );
        put(
            &mut config.drain_timeout,
            duration(s.drain_timeout),
            set("drain_timeout"),
        );
        put(
            &mut config.sse_keepalive,
            duration(s.sse_keepalive),
            set("sse_keepalive"),
        );
        let l = &s.limits;
        put(&mut config.max_body, l.max_body, set("max_body"));
        put(
            &mut config.max_tools_list,
            l.max_tools_list,
            set("max_tools_list"),
        );
        put(
            &mut config.rate_limit_route,
            l.rate_limit_route.map(|r| Some(r.0)),
            set("rate_limit_route"),
        );
        put(
            &mut config.rate_limit_identity,
            l.rate_limit_identity.map(|r| Some(r.0)),
            set("rate_limit_identity"),
        );
        put(
            &mut config.max_connections_per_ip,
            l.max_connections_per_ip,
            set("max_connections_per_ip"),
        );
        put(
            &mut config.max_routes_per_owner,
            l.max_routes_per_owner,
            set("max_routes_per_owner"),
        );
        put(
            &mut config.max_quic_handshakes_per_ip,
            l.max_quic_handshakes_per_ip,
            set("max_quic_handshakes_per_ip"),
        );
        put(
            &mut config.header_read_timeout,
            duration(l.header_read_timeout),
            set("header_read_timeout"),
        );
        put(
            &mut config.http_idle_timeout,
            duration(l.http_idle_timeout),
            set("http_idle_timeout"),
        );
        put(
            &mut config.body_read_timeout,
            duration(l.body_read_timeout),
            set("body_read_timeout"),
        );
        let o = &s.oauth;
        put(
            &mut config.access_token_ttl,
            duration(o.access_token_ttl),
            set("access_token_ttl"),
        );
        put(
            &mut config.refresh_token_ttl,
            duration(o.refresh_token_ttl),
            set("refresh_token_ttl"),
        );
        put(
            &mut config.device_code_ttl,
            duration(o.device_code_ttl),
            set("device_code_ttl"),
        );
        put(
            &mut config.device_poll_interval,
            duration(o.device_poll_interval),
            set("device_poll_interval"),
        );
        put(&mut config.cimd.enabled, o.cimd.map(OnOff::on), set("cimd"));
        put(
            &mut config.cimd.allow_domains,
            o.cimd_allow_domains.clone(),
            set("cimd_allow_domains"),
        );
        put(
            &mut config.cimd.allow_loopback,
            o.cimd_dev_allow_loopback,
            set("cimd_dev_allow_loopback"),
        );
        put(
            &mut config.cimd.extra_ca,
            o.cimd_ca.clone().map(Some),
            set("cimd_ca"),
        );
        let u = &mut config.upstream;
        put(
            &mut u.oidc_issuer,
            o.oidc_issuer.clone().map(Some),
            set("oidc_issuer"),
        );
        put(
            &mut u.oidc_client_id,
            o.oidc_client_id.clone().map(Some),
            set("oidc_client_id"),
        );
        put(
            &mut u.oidc_client_secret,
            o.oidc_client_secret.clone().map(Some),
            set("oidc_client_secret"),
        );
        put(
            &mut u.oidc_groups_claim,
            o.oidc_groups_claim.clone(),
            set("oidc_groups_claim"),
        );
        put(
            &mut u.oidc_name,
            o.oidc_name.clone().map(Some),
            set("oidc_name"),
        );
        put(
            &mut u.github_client_id,
            o.github_client_id.clone().map(Some),
            set("github_client_id"),
        );
        put(
            &mut u.github_client_secret,
            o.github_client_secret.clone().map(Some),
            set("github_client_secret"),
        );
        put(
            &mut u.dev_allow_http_loopback,
            o.upstream_dev_allow_http_loopback,
            set("upstream_dev_allow_http_loopback"),
        );
        put(
            &mut config.admin_listen,
            s.admin_listen.map(|a| (a.0).0),
            set("admin_listen"),
        );
    }

    /// One line for `relay config check`: the file is fine, and the settings
    /// that matter most.
    pub fn summary(&self) -> String {
        let s = &self.settings;
        let or_default = |v: Option<String>| v.unwrap_or_else(|| "default".into());
        let tls = match self.tls() {
            Some(TlsSource::Files { cert, .. }) => cert.display().to_string(),
            Some(TlsSource::SelfSigned) => "self-signed".into(),
            Some(TlsSource::Acme(a)) => format!("ACME for {}", a.domain),
            None => "from the command line".into(),
        };
        format!(
            "{}: OK (listen {}, public URL {}, TLS {tls}, state dir {}, policy {})",
            self.path.display(),
            or_default(s.listen.map(|a| a.0.to_string())),
            or_default(s.public_url.clone()),
            or_default(s.state_dir.as_ref().map(|d| d.display().to_string())),
            s.policy
                .as_ref()
                .map(|p| p.get_ref().display().to_string())
                .unwrap_or_else(|| "none".into()),
        )
    }
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
