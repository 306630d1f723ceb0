//! Log setup shared by the `relay` and `agent` binaries.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The default filter: `info`, without the libraries' chatter. rmcp logs
/// three `info` lines for every MCP session it serves, and a stateless
/// request (2026-07-28) is a session of its own: on a busy agent that was
/// most of its log and 7% of its CPU (perf, under the benchmark's load).
const DEFAULT_FILTER: &str = "info,quinn=warn,yamux=warn,rustls=warn,hyper=warn,rmcp=warn";

/// Installs the global subscriber, writing to stderr. `RUST_LOG` overrides
/// the default level (`info`).
pub fn init(format: LogFormat) {
    // Colours only for a person at a terminal: a log file or journald gets
    // plain text, not escape codes.
    init_to(format, std::io::stderr, std::io::stderr().is_terminal());
}

/// [`init`] for a server that logs a line per request: each line is
/// written by the stderr writer's thread ([`crate::lines`]), not on the
/// request's path. The process must call
/// `lines::flush(lines::Stream::Stderr)` before it exits; a panic does.
pub fn init_off_path(format: LogFormat) {
    crate::lines::flush_on_panic();
    init_to(
        format,
        crate::lines::StderrLines,
        std::io::stderr().is_terminal(),
    );
}

/// [`init`], writing each event to what `writer` makes (with colours if
/// `ansi`).
pub fn init_to<W>(format: LogFormat, writer: W, ansi: bool)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
