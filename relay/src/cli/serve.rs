//! `relay serve`: its flags, merged with the config file into the relay's
//! configuration, and the relay run until it is told to stop (reloading on
//! SIGHUP).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::config::file::ConfigFile;
use crate::config::settings::Settings;
use crate::logging::{self, LogFormat};
use crate::TlsSource;

#[derive(Args)]
pub struct ServeArgs {
    /// A TOML file with these settings (see deploy/relay.toml); flags and
    /// environment variables given override it.
    #[arg(long, env = "DRAWBRIDGE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

/// Runs the relay with these flags (over `--config`'s file, where not
/// `given`) until SIGINT or SIGTERM.
pub fn serve(
    args: ServeArgs,
    log_format: LogFormat,
    given: &dyn Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let mut settings = args.settings;
    if let Some(path) = &args.config {
        settings.overlay(ConfigFile::load(path)?.into_settings(), given);
    }
    // A line per request: written off the requests' path.
    logging::init_off_path(settings.log_format.unwrap_or(log_format));
    let tls = settings.certificate().context(
        "give one of --acme-domain DOMAIN --acme-email EMAIL, --tls-cert FILE --tls-key FILE, or --self-signed (or [acme] or [tls] in --config)",
    )?;
    let config = settings.into_config(tls);
    if config.public_url.is_none()
        && config.listen.ip().is_unspecified()
        && !matches!(config.tls, TlsSource::Acme(_))
    {
        tracing::warn!(
            "no --public-url: route URLs will say https://localhost; set --public-url https://your.domain"
        );
    }
    let runtime = runtime(config.threads).context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Before anything can name this process: SIGHUP must not end it.
        let mut reloads =
            crate::signals::ReloadRequests::listen().context("cannot listen for SIGHUP")?;
        let state_dir = config.state_dir.clone();
        let relay = crate::start(config).await?;
        let pidfile = crate::reload::pidfile::PidFile::create(&state_dir)?;
        if pidfile.is_none() {
            tracing::warn!(
                pidfile = %crate::reload::pidfile::path(&state_dir).display(),
                "another relay serves this state dir; `relay reload` reaches that one, not this"
            );
        }
        if let Some(admin) = relay.admin_addr {
            println!("admin listener (metrics, health) on http://{admin}");
        }
        println!(
            "drawbridge relay listening on {} (tcp{}) as {}",
            relay.local_addr,
            if relay.state.config.quic { "+udp" } else { "" },
            relay.public_url
        );
        if let Some(ca) = &relay.ca_path {
            println!(
                "self-signed: agents and clients should trust {}",
                ca.display()
            );
        }
        let stop = crate::signals::stop_requested();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = reloads.next() => {
                    let outcome = relay.reload();
                    if let Err(e) = crate::reload::record(&state_dir, &outcome) {
                        tracing::error!(error = %e, "cannot record the reload's outcome for `relay reload`");
                    }
                }
            }
        }
        relay.shutdown().await;
        drop(pidfile);
        anyhow::Ok(())
    })
}

/// The runtime serving connections: one thread, or a pool of `threads`
/// (see `--threads`). Blocking work (password checks, database calls) goes
/// to tokio's blocking pool either way.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _};

    use super::super::{given, Cli, Command};
    use crate::config::settings::Settings;
    use crate::TlsSource;

    /// The settings `relay serve ARGS` and the config file `file` make.
    fn merged(args: &[&str], file: &str) -> Settings {
        let matches = Cli::command()
            .try_get_matches_from(["relay", "serve"].iter().chain(args))
            .expect("the flags parse");
        let cli = Cli::from_arg_matches(&matches).expect("the flags parse");
        let Command::Serve(serve) = cli.command else {
            panic!("not serve")
        };
        let mut settings = serve.settings;
        let file = toml::from_str::<Settings>(file).expect("the file parses");
        settings.overlay(file, &|id| given(&matches, id));
        settings
    }

    #[test]
    fn a_flag_wins_over_the_file_and_the_file_over_the_default() {
        let file = "public_url = \"https://file.test\"\nlog_format = \"json\"\nquic = false\n\
                    [limits]\nmax_body = 7\nmax_routes_per_owner = 3\n";
        let s = merged(&["--max-body", "5", "--log-format", "text"], file);
        assert_eq!(s.limits.max_body, 5, "the flag");
        assert_eq!(s.limits.max_routes_per_owner, 3, "the file");
        assert_eq!(s.public_url.as_deref(), Some("https://file.test"));
        assert!(s.no_quic, "quic = false is --no-quic");
        assert_eq!(s.log_format, None, "--log-format was given");
        assert_eq!(s.limits.max_connections_per_ip, 256, "the default");
        assert_eq!(s.keepalive_interval, std::time::Duration::from_secs(5));

        let s = merged(&[], file);
        assert_eq!(s.limits.max_body, 7);
        assert_eq!(s.log_format, Some(crate::logging::LogFormat::Json));
    }

    #[test]
    fn a_certificate_flag_leaves_out_the_files_tables() {
        let file =
            "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[acme]\ndirectory = \"https://ca.test\"\n";
        let s = merged(&["--self-signed"], file);
        assert!(matches!(s.certificate(), Some(TlsSource::SelfSigned)));
        assert_eq!(s.acme.acme_directory, crate::AcmeConfig::LETS_ENCRYPT);
        let s = merged(&[], file);
        assert!(matches!(s.certificate(), Some(TlsSource::Files { .. })));
        let s = merged(
            &["--acme-domain", "relay.test", "--acme-email", "a@b.test"],
            file,
        );
        assert!(matches!(
            s.certificate(),
            Some(TlsSource::Acme(a)) if a.directory == crate::AcmeConfig::LETS_ENCRYPT
        ));
    }
}
