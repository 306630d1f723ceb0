//! `relay serve --config`: the good fixture sets every key, each bad fixture
//! is refused with its exact message (file, line, column, key).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use relay::logging::LogFormat;
use relay::{ConfigFile, ConfigFileError, RelayConfig, Settings, TlsSource};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

/// The relay's configuration from `settings` (the certificate aside).
fn config(settings: Settings) -> RelayConfig {
    settings.into_config(TlsSource::SelfSigned)
}

/// `file`'s settings laid under the built-in defaults, no flag given.
fn from_file(file: &ConfigFile) -> RelayConfig {
    let mut settings = Settings::default();
    settings.overlay(file.settings().clone(), &|_| false);
    config(settings)
}

/// The error `ConfigFile::check` gives for fixture `name`.
fn refusal(name: &str) -> String {
    match ConfigFile::check(&fixture(name)) {
        Ok(_) => panic!("{name} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_good_fixture_sets_every_setting() {
    let path = fixture("good.toml");
    let file = ConfigFile::check(&path).expect("good.toml");
    let dir = fixture("");
    assert!(matches!(
        file.settings().certificate(),
        Some(TlsSource::Files { cert, key })
            if cert == dir.join("test-only-cert.pem") && key == dir.join("test-only-key.pem")
    ));
    assert_eq!(file.settings().log_format, Some(LogFormat::Json));
    let c = from_file(&file);
    assert_eq!(
        c.listen,
        "127.0.0.1:8443".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(c.public_url.as_deref(), Some("https://relay.test:8443"));
    assert_eq!(c.state_dir, dir.join("state"));
    assert!(!c.quic);
    assert_eq!(c.policy, Some(dir.join("org.cedar")));
    assert_eq!(c.allow_origins, vec!["https://app.example.com".to_owned()]);
    assert!(c.audit_arguments);
    assert_eq!(c.response_timeout, Duration::from_secs(120));
    assert_eq!(c.keepalive_interval, Duration::from_secs(3));
    assert_eq!(c.drain_timeout, Duration::from_secs(4));
    assert_eq!(c.sse_keepalive, Duration::ZERO);
    assert_eq!(c.max_body, 1_048_576);
    assert_eq!(c.max_tools_list, 2_097_152);
    assert_eq!(
        c.rate_limit_route.map(|r| r.to_string()).as_deref(),
        Some("600/min")
    );
    assert_eq!(
        c.rate_limit_identity.map(|r| r.to_string()).as_deref(),
        Some("10/s")
    );
    assert_eq!(c.max_connections_per_ip, 64);
    assert_eq!(c.max_quic_handshakes_per_ip, 8);
    assert_eq!(c.header_read_timeout, Duration::from_secs(5));
    assert_eq!(c.body_read_timeout, Duration::from_secs(6));
    assert_eq!(c.access_token_ttl, Duration::from_secs(15 * 60));
    assert_eq!(c.refresh_token_ttl, Duration::from_secs(7 * 86_400));
    assert_eq!(
        file.summary(),
        format!(
            "{}: OK (listen 127.0.0.1:8443, public URL https://relay.test:8443, TLS {}, \
             state dir {}, policy {})",
            path.display(),
            dir.join("test-only-cert.pem").display(),
            dir.join("state").display(),
            dir.join("org.cedar").display()
        )
    );
}

#[test]
fn settings_given_on_the_command_line_are_kept() {
    let file = ConfigFile::load(&fixture("good.toml")).expect("good.toml");
    // Every flag given: the file changes nothing.
    let mut s = Settings::default();
    s.overlay(file.settings().clone(), &|_| true);
    assert_eq!(format!("{s:?}"), format!("{:?}", Settings::default()));
    // Only --max-body and --public-url given: those two are kept, the rest
    // comes from the file.
    let mut s = Settings {
        public_url: Some("https://flag.test".into()),
        ..Settings::default()
    };
    s.overlay(file.settings().clone(), &|id| {
        id == "max_body" || id == "public_url"
    });
    let c = config(s);
    assert_eq!(c.max_body, config(Settings::default()).max_body);
    assert_eq!(c.public_url.as_deref(), Some("https://flag.test"));
    assert_eq!(c.max_connections_per_ip, 64);
}

/// The certificate is one setting: a flag that names one leaves out the
/// file's `[tls]` and `[acme]` whole.
#[test]
fn a_certificate_on_the_command_line_leaves_out_the_files() {
    let file = ConfigFile::load(&fixture("good.toml")).expect("good.toml");
    let mut s = Settings::default();
    s.tls.self_signed = true;
    s.overlay(file.settings().clone(), &|id| id == "self_signed");
    assert!(matches!(s.certificate(), Some(TlsSource::SelfSigned)));
    assert_eq!(s.tls.tls_cert, None);
    // Without it, the file's certificate.
    let mut s = Settings::default();
    s.overlay(file.settings().clone(), &|_| false);
    assert!(matches!(s.certificate(), Some(TlsSource::Files { .. })));
    assert!(Settings::default().certificate().is_none());
}

#[test]
fn an_unknown_key_is_refused_with_its_line() {
    assert_eq!(
        refusal("bad-unknown-key.toml"),
        format!(
            "{}:8:1: limits.max_bodyy: unknown key `max_bodyy`, expected one of `max_body`, \
             `max_tools_list`, `rate_limit_route`, `rate_limit_identity`, \
             `max_connections_per_ip`, `max_routes_per_owner`, `max_quic_handshakes_per_ip`, \
             `header_read_timeout`, `http_idle_timeout`, `body_read_timeout`",
            fixture("bad-unknown-key.toml").display()
        )
    );
    assert_eq!(
        refusal("bad-unknown-table.toml"),
        format!(
            "{}:4:2: acmee: unknown key `acmee`, expected one of `listen`, `public_url`, \
             `state_dir`, `database`, `log_format`, `quic`, `policy`, `allow_origins`, `audit_arguments`, \
             `audit_rotate_size`, `response_timeout`, `keepalive_interval`, `drain_timeout`, `threads`, `sse_keepalive`, \
             `admin_listen`, `tls`, `acme`, `limits`, `oauth`, `cluster`",
            fixture("bad-unknown-table.toml").display()
        )
    );
}

#[test]
fn a_value_of_the_wrong_type_is_refused() {
    assert_eq!(
        refusal("bad-wrong-type.toml"),
        format!(
            "{}:5:26: limits.max_connections_per_ip: invalid type: string \"many\", expected u32",
            fixture("bad-wrong-type.toml").display()
        )
    );
}

#[test]
fn a_bad_duration_is_refused() {
    assert_eq!(
        refusal("bad-duration.toml"),
        format!(
            "{}:1:17: drain_timeout: invalid duration \"10 parsecs\": unknown time unit \
             \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, \
             years (and few variations)",
            fixture("bad-duration.toml").display()
        )
    );
}

#[test]
fn a_bad_rate_is_refused() {
    assert_eq!(
        refusal("bad-rate.toml"),
        format!(
            "{}:5:20: limits.rate_limit_route: invalid rate \"10/day\": expected N/s, N/min or \
             N/h, e.g. 600/min",
            fixture("bad-rate.toml").display()
        )
    );
}

#[test]
fn a_bad_address_is_refused() {
    assert_eq!(
        refusal("bad-address.toml"),
        format!(
            "{}:1:10: listen: invalid address (host:port) \"localhost\": invalid socket address \
             syntax",
            fixture("bad-address.toml").display()
        )
    );
}

#[test]
fn a_missing_certificate_is_refused() {
    assert_eq!(
        refusal("bad-missing-cert.toml"),
        format!(
            "{}:2:8: tls.cert: cannot read {}: No such file or directory (os error 2)",
            fixture("bad-missing-cert.toml").display(),
            fixture("no-such-cert.pem").display()
        )
    );
    assert_eq!(
        refusal("bad-cert-without-key.toml"),
        format!(
            "{}:2:8: tls.cert: tls.key is needed too",
            fixture("bad-cert-without-key.toml").display()
        )
    );
    assert_eq!(
        refusal("bad-no-tls.toml"),
        format!(
            "{}: no certificate: set acme.domain and acme.email, tls.cert and tls.key, or tls.self_signed = true",
            fixture("bad-no-tls.toml").display()
        )
    );
    // Without the check for a certificate, the same file loads: flags may
    // give it.
    ConfigFile::load(&fixture("bad-no-tls.toml")).expect("loads");
}

/// The example file's `self_signed = true` left in place with `[acme]` set
/// would serve the self-signed certificate, silently: refused instead.
#[test]
fn acme_with_another_certificate_is_refused() {
    assert_eq!(
        refusal("bad-acme-and-self-signed.toml"),
        format!(
            "{}:5:10: acme.domain: cannot be used together with tls.self_signed = true (set self_signed = false for a certificate from ACME)",
            fixture("bad-acme-and-self-signed.toml").display()
        )
    );
    assert_eq!(
        refusal("bad-acme-and-cert.toml"),
        format!(
            "{}:6:10: acme.domain: cannot be used together with tls.cert and tls.key (remove one or the other)",
            fixture("bad-acme-and-cert.toml").display()
        )
    );
}

#[test]
fn a_policy_that_does_not_compile_is_refused() {
    let policy = fixture("broken.cedar");
    assert_eq!(
        refusal("bad-policy.toml"),
        format!(
            "{}:1:10: policy: policy {} is not valid Cedar:\n  {}:4:6: unexpected token `context`",
            fixture("bad-policy.toml").display(),
            policy.display(),
            policy.display()
        )
    );
}

#[test]
fn a_syntax_error_is_refused_with_its_line() {
    assert_eq!(
        refusal("bad-syntax.toml"),
        format!(
            "{}:1:25: invalid basic string, expected `\"`",
            fixture("bad-syntax.toml").display()
        )
    );
}

#[test]
fn a_missing_file_is_refused() {
    let e = ConfigFile::load(&fixture("no-such.toml")).expect_err("missing");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot read {}: No such file or directory (os error 2)",
            fixture("no-such.toml").display()
        )
    );
}

/// The keys of a table of the config file (`None`: the top level), as its
/// error for an unknown key lists them.
fn file_keys(dir: &Path, table: Option<&str>) -> Result<Vec<String>, String> {
    let path = dir.join("keys.toml");
    let text = match table {
        None => "zzz = 0".to_owned(),
        Some(t) => format!("[{t}]\nzzz = 0"),
    };
    std::fs::write(&path, text).expect("write keys.toml");
    match ConfigFile::load(&path) {
        // "expected one of `a`, `b`, `c`", or "expected `a` or `b`".
        Err(ConfigFileError::At { message, .. }) => message
            .split_once("expected one of ")
            // "expected `url`" for a table of one key.
            .or_else(|| message.split_once("unknown key `zzz`, expected "))
            .map(|(_, keys)| {
                keys.split(", ")
                    .flat_map(|k| k.split(" or "))
                    .map(|k| k.trim_matches('`').to_owned())
                    .collect()
            })
            .ok_or(message),
        other => panic!("zzz was not refused: {other:?}"),
    }
}

/// Every key of the file, dotted for tables.
fn every_key() -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("relay-config-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut keys = Vec::new();
    for key in file_keys(&dir, None).expect("top-level keys") {
        match file_keys(&dir, Some(&key)) {
            Ok(inner) => keys.extend(inner.into_iter().map(|k| format!("{key}.{k}"))),
            Err(_) => keys.push(key),
        }
    }
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
    keys
}

/// deploy/relay.toml passes the check, has every key (set or commented
/// out, in its table), and what it sets are the defaults, apart from the
/// settings a deployment must choose.
#[test]
fn the_deploy_example_covers_every_key_with_its_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/relay.toml");
    let text = std::fs::read_to_string(&path).expect("deploy/relay.toml");
    let keys = every_key();
    assert!(keys.len() > 40, "{keys:?}");
    for key in &keys {
        let (table, name) = match key.split_once('.') {
            Some((t, n)) => (Some(t), n),
            None => (None, key.as_str()),
        };
        let section = match table {
            None => text.split("\n[").next().unwrap_or_default(),
            Some(t) => text
                .split(&format!("\n[{t}]\n"))
                .nth(1)
                .and_then(|s| s.split("\n[").next())
                .unwrap_or_else(|| panic!("deploy/relay.toml has no [{t}]")),
        };
        assert!(
            section.lines().any(|l| {
                let l = l.trim_start_matches("# ");
                l.starts_with(&format!("{name} = "))
            }),
            "deploy/relay.toml does not show {key}"
        );
    }

    let file = ConfigFile::check(&path).expect("deploy/relay.toml");
    let example = from_file(&file);
    let mut expected = config(Settings::default());
    expected.public_url = Some("https://relay.example.com".into());
    expected.state_dir = PathBuf::from("/var/lib/drawbridge");
    assert_eq!(format!("{example:?}"), format!("{expected:?}"));
    assert_eq!(file.settings().log_format, Some(LogFormat::default()));
}
