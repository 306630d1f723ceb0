//! `bench`: Drawbridge against direct access and against rathole, bore and
//! `ssh -R`, on loopback, in one run. Writes `bench/results.json`,
//! `BENCHMARKS.md` and `bench/latency.svg`.
//!
//! `cargo run --release -p bench -- --quick` (under 3 minutes) or without
//! `--quick` for the full run.

mod breakdown;
mod client;
mod cluster;
mod machine_cpu;
mod plot;
mod policy_cost;
/// The throwaway PostgreSQL server of the cluster scenario: the end-to-end
/// tests' own, included rather than depended on (that crate brings the test
/// tools with it).
#[path = "../../tests/src/postgres.rs"]
mod postgres;
mod procs;
mod reconnect;
mod record;
mod report;
mod run;
mod scale;
mod systems;
mod tools;
mod tunnel_hop;
mod tunnel_peer;
mod upstream;

use clap::Parser;

/// Benchmarks the relay path against direct access and other tunnels.
#[derive(Parser)]
#[command(name = "bench")]
struct Cli {
    /// The short run (under 3 minutes): shorter load levels, one bulk download.
    #[arg(long)]
    quick: bool,
    /// Only these systems, comma-separated (direct, drawbridge-quic,
    /// drawbridge-quic-nopolicy, drawbridge-tcp, rathole-tcp, rathole-noise,
    /// bore, ssh-r). Scale, reconnect, policy and breakdown run with
    /// drawbridge-quic (cluster too: its own relays, on SQLite and on
    /// PostgreSQL);
    /// tunnel with drawbridge-quic (and bare quinn) and drawbridge-tcp (and
    /// bare TLS+yamux).
    #[arg(long, value_delimiter = ',')]
    systems: Vec<String>,
    /// Only these scenarios, comma-separated (small, bulk, scale, reconnect,
    /// policy, tunnel, breakdown, cluster). The cluster scenario needs
    /// PostgreSQL (initdb, postgres, pg_isready; see tests/src/postgres.rs)
    /// and is skipped without it. A run of a subset of systems or scenarios writes its results
    /// under the run's temporary directory and leaves bench/results.json and
    /// BENCHMARKS.md as they are: those always show one whole run.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Agents connected at once in the scale scenario [default: 1000 with
    /// --quick, 10000 without].
    #[arg(long)]
    agents: Option<usize>,
    /// Only regenerate BENCHMARKS.md and the plot from bench/results.json.
    #[arg(long)]
    report_only: bool,
    /// Use the relay and agent binaries as they are built (no cargo build).
    #[arg(long)]
    no_build: bool,
    /// The far side of the tunnel scenario, started by the bench itself
    /// with the file that says where to dial.
    #[arg(long, hide = true)]
    tunnel_peer: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(spec) = &cli.tunnel_peer {
        return tunnel_peer::run(spec);
    }
    for s in &cli.systems {
        if !record::SYSTEMS.contains(&s.as_str()) {
            anyhow::bail!(
                "unknown system {s:?}; one of {}",
                record::SYSTEMS.join(", ")
            );
        }
    }
    for s in &cli.scenarios {
        if !record::SCENARIOS.contains(&s.as_str()) {
            anyhow::bail!(
                "unknown scenario {s:?}; one of {}",
                record::SCENARIOS.join(", ")
            );
        }
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run::run(run::Options {
        quick: cli.quick,
        systems: cli.systems,
        scenarios: cli.scenarios,
        agents: cli.agents.unwrap_or(if cli.quick { 1_000 } else { 10_000 }),
        report_only: cli.report_only,
        no_build: cli.no_build,
    }))
}
