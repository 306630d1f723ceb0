//! One benchmark run, start to finish: build, install, measure every system,
//! write `bench/results.json`, `BENCHMARKS.md` and `bench/latency.svg`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::client;
use crate::record::{median, Record, SYSTEMS};
use crate::report::{self, Meta};
use crate::systems::{self, Env};
use crate::tools::{self, Tools};
use crate::upstream::LocalServer;

/// What to run.
pub struct Options {
    pub quick: bool,
    /// Only these systems (all when empty).
    pub systems: Vec<String>,
    /// Only these scenarios (all when empty).
    pub scenarios: Vec<String>,
    /// Agents in the scale scenario.
    pub agents: usize,
    /// Only regenerate `BENCHMARKS.md` and the plot from `bench/results.json`.
    pub report_only: bool,
    /// Skip `cargo build` of the relay and agent.
    pub no_build: bool,
}

/// How long and how often each scenario runs.
struct Plan {
    level_time: Duration,
    warmup: usize,
    bulk_runs: usize,
    reconnect_runs: usize,
    policy_runs: usize,
}

/// 256 MiB.
const BULK_BYTES: u64 = 256 * 1024 * 1024;
const LEVELS: [usize; 3] = [1, 16, 64];

impl Options {
    fn wants_system(&self, system: &str) -> bool {
        self.systems.is_empty() || self.systems.iter().any(|s| s == system)
    }

    fn wants_scenario(&self, scenario: &str) -> bool {
        self.scenarios.is_empty() || self.scenarios.iter().any(|s| s == scenario)
    }

    /// Every system and every scenario: the run whose figures the committed
    /// report shows.
    fn whole(&self) -> bool {
        self.systems.is_empty() && self.scenarios.is_empty()
    }
}

pub fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let results = bench_dir().join("results.json");
    let meta_path = bench_dir().join("results.meta.json");
    if opts.report_only {
        let records: Vec<Record> = serde_json::from_str(&std::fs::read_to_string(&results)?)?;
        let meta: Meta = serde_json::from_str(&std::fs::read_to_string(&meta_path)?)?;
        return write_report(&records, &meta);
    }
    let started = Instant::now();
    let plan = if opts.quick {
        Plan {
            level_time: Duration::from_millis(1500),
            warmup: 20,
            bulk_runs: 1,
            reconnect_runs: 10,
            policy_runs: 20_000,
        }
    } else {
        Plan {
            level_time: Duration::from_secs(5),
            warmup: 100,
            bulk_runs: 3,
            reconnect_runs: 10,
            policy_runs: 200_000,
        }
    };
    if !opts.no_build {
        build_binaries()?;
    }
    for bin in ["relay", "agent"] {
        let path = systems::workspace_bin(bin);
        if !path.exists() {
            bail!(
                "{} is missing: build it (cargo build --release --workspace --bins)",
                path.display()
            );
        }
    }
    // Only the small and bulk scenarios use the other tunnels: without them
    // nothing is installed.
    let tools = if opts.wants_scenario("small") || opts.wants_scenario("bulk") {
        tools::ensure(&opts.systems)?
    } else {
        tools::ensure(&["drawbridge-quic".into()])?
    };
    let dir = std::env::temp_dir().join(format!("drawbridge-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    eprintln!("== logs of this run: {}", dir.display());
    let db = dir.join("bench.db");
    let upstream = LocalServer::start(&db).await?;
    let env = Env {
        tools: &tools,
        upstream: upstream.addr,
        db: &db,
        dir: &dir,
    };

    let mut records = Vec::new();
    // A scenario left out for want of what it needs (not a failure).
    let mut skipped = false;
    if opts.wants_scenario("small") || opts.wants_scenario("bulk") {
        for system in SYSTEMS {
            if !opts.wants_system(system) {
                continue;
            }
            eprintln!("== {system}");
            match measure(system, &env, &plan, &opts).await {
                Ok(rs) => records.extend(rs),
                Err(e) => eprintln!("!! {system} not measured: {e:#}"),
            }
        }
    }
    if opts.wants_scenario("tunnel")
        && (opts.wants_system("drawbridge-quic") || opts.wants_system("drawbridge-tcp"))
    {
        eprintln!("== tunnel hop: one empty exchange against a bare stream echo");
        // Each of Drawbridge's transports with the bare stream under it.
        let hops: Vec<&str> = crate::tunnel_hop::HOPS
            .iter()
            .zip(["drawbridge-quic", "drawbridge-tcp"].iter().cycle())
            .filter(|(_, system)| opts.wants_system(system))
            .map(|(hop, _)| *hop)
            .collect();
        let tunnel_dir = dir.join("tunnel");
        let (warmup, level_time) = (plan.warmup, plan.level_time);
        // The measuring side on one thread, as `relay serve` runs by default.
        let measured = tokio::task::spawn_blocking(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(crate::tunnel_hop::run(
                    &tunnel_dir,
                    &hops,
                    warmup,
                    level_time,
                ))
        })
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r);
        match measured {
            Ok(rs) => records.extend(rs),
            Err(e) => eprintln!("!! tunnel not measured: {e:#}"),
        }
    }
    if opts.wants_system("drawbridge-quic") {
        if opts.wants_scenario("breakdown") {
            eprintln!("== breakdown: one tools/call at a time, hop by hop");
            match crate::breakdown::run(&env, &upstream.times, plan.warmup, plan.level_time).await {
                Ok(rs) => records.extend(rs),
                Err(e) => eprintln!("!! breakdown not measured: {e:#}"),
            }
        }
        if opts.wants_scenario("policy") {
            eprintln!("== policy decision, {} messages", plan.policy_runs);
            records.push(crate::policy_cost::run(plan.policy_runs)?);
        }
        if opts.wants_scenario("scale") {
            eprintln!("== scale: {} agents", opts.agents);
            match crate::scale::run(
                &dir.join("scale"),
                &format!("http://{}", upstream.addr),
                opts.agents,
            )
            .await
            {
                Ok(r) => records.push(r),
                Err(e) => eprintln!("!! scale not measured: {e:#}"),
            }
        }
        if opts.wants_scenario("reconnect") {
            eprintln!("== reconnect, {} relay restarts", plan.reconnect_runs);
            match crate::reconnect::run(&dir.join("reconnect"), &db, plan.reconnect_runs).await {
                Ok(r) => records.push(r),
                Err(e) => eprintln!("!! reconnect not measured: {e:#}"),
            }
        }
        if opts.wants_scenario("cluster") {
            eprintln!("== cluster: three relay nodes on PostgreSQL beside one node");
            match crate::cluster::run(&dir.join("cluster"), &db, plan.warmup, plan.level_time).await
            {
                Ok(crate::cluster::Outcome::Measured(rs)) => records.extend(rs),
                Ok(crate::cluster::Outcome::Skipped(why)) => {
                    eprintln!("== cluster skipped: {why}");
                    skipped = true;
                }
                Err(e) => eprintln!("!! cluster not measured: {e:#}"),
            }
        }
    }
    if records.is_empty() && skipped {
        eprintln!("== nothing else to measure");
        return Ok(());
    }
    if records.is_empty() {
        bail!("nothing was measured");
    }
    let meta = describe(&opts, &plan, &tools, started.elapsed());
    let mut json = String::from("[\n");
    for (i, r) in records.iter().enumerate() {
        json.push_str("  ");
        json.push_str(&serde_json::to_string(r)?);
        json.push_str(if i + 1 < records.len() { ",\n" } else { "\n" });
    }
    json.push_str("]\n");
    if !opts.whole() {
        // A part of a run is no report: the committed one stays whole.
        let partial = dir.join("results.json");
        std::fs::write(&partial, json)?;
        eprintln!(
            "== done in {:.0} s; a partial run, so bench/results.json and BENCHMARKS.md are \
             left as they are; its figures: {}",
            started.elapsed().as_secs_f64(),
            partial.display()
        );
        return Ok(());
    }
    std::fs::write(&results, json)?;
    std::fs::write(&meta_path, serde_json::to_string_pretty(&meta)? + "\n")?;
    write_report(&records, &meta)?;
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "== done in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        results.display()
    );
    Ok(())
}

fn write_report(records: &[Record], meta: &Meta) -> anyhow::Result<()> {
    let md = tools::workspace_dir().join("BENCHMARKS.md");
    std::fs::write(&md, report::render(records, meta))?;
    crate::plot::write(records, &bench_dir().join("latency.svg"))?;
    eprintln!("== wrote {} and bench/latency.svg", md.display());
    Ok(())
}

/// Small requests at each concurrency, then bulk.
async fn measure(
    system: &str,
    env: &Env<'_>,
    plan: &Plan,
    opts: &Options,
) -> anyhow::Result<Vec<Record>> {
    let running = systems::start(system, env).await?;
    let mut out = Vec::new();
    let levels: &[usize] = if opts.wants_scenario("small") {
        &LEVELS
    } else {
        &[]
    };
    for &c in levels {
        let level = client::load(&running.target, c, plan.warmup, plan.level_time).await?;
        out.push(level.record(system, "small", c));
    }
    let bulk_runs = if opts.wants_scenario("bulk") {
        plan.bulk_runs
    } else {
        0
    };
    let mut mbps = Vec::new();
    for _ in 0..bulk_runs {
        mbps.push(client::bulk(&running.target, BULK_BYTES).await?);
    }
    if !mbps.is_empty() {
        let mut r = Record::new(system, "bulk");
        r.mb_per_s = Some(median(&mbps));
        r.runs = Some(bulk_runs as u64);
        eprintln!("  bulk {:.0} MB/s", median(&mbps));
        out.push(r);
    }
    drop(running);
    // Let the processes go before the next system starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(out)
}

/// `cargo build` of the relay and agent binaries (with the workspace's other
/// binaries), in this build's profile.
fn build_binaries() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    // The whole workspace, as scripts/test.sh builds it: the same features
    // for every dependency, so nothing is compiled twice.
    cmd.current_dir(tools::workspace_dir())
        .args(["build", "--workspace", "--bins"]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    eprintln!("== building the relay and agent binaries");
    let status = cmd.status().context("run cargo build")?;
    if !status.success() {
        bail!("cargo build of the relay and agent failed");
    }
    Ok(())
}

fn describe(opts: &Options, plan: &Plan, tools: &Tools, took: Duration) -> Meta {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = crate::procs::run("uname", &["-sr"]).unwrap_or_default();
    let rustc = crate::procs::run("rustc", &["--version"]).unwrap_or_default();
    let date = crate::procs::run("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let profile = if cfg!(debug_assertions) {
        "DEBUG build: the numbers mean nothing, use --release"
    } else {
        "release build"
    };
    let mut flags = String::new();
    if opts.quick {
        flags.push_str(" --quick");
    }
    if !opts.systems.is_empty() {
        flags.push_str(&format!(" --systems {}", opts.systems.join(",")));
    }
    let default_agents = if opts.quick { 1_000 } else { 10_000 };
    if opts.agents != default_agents {
        flags.push_str(&format!(" --agents {}", opts.agents));
    }
    // What was run: with --no-build, this binary on binaries built
    // beforehand (`cargo build --release --workspace`), not `cargo run`.
    let mut command = if opts.no_build {
        let dir = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        format!("./target/{dir}/bench --no-build")
    } else {
        String::from("cargo run --release -p bench --")
    };
    command.push_str(&flags);
    let command = command.trim_end_matches(" --").to_owned();
    let secs = plan.level_time.as_secs_f64();
    Meta {
        command,
        mode: format!("{} ({profile})", if opts.quick { "quick" } else { "full" }),
        date: date.trim().to_owned(),
        machine: format!(
            "{model}, {cpus} CPUs, {mem_gib:.0} GiB, {}; everything on one host over loopback",
            kernel.trim()
        ),
        versions: vec![
            ("drawbridge".into(), env!("CARGO_PKG_VERSION").into()),
            ("rustc".into(), rustc.trim().to_owned()),
            ("rathole".into(), format!("{} (crates.io, features server,client,noise)", tools::RATHOLE)),
            ("bore-cli".into(), format!("{} (crates.io)", tools::BORE)),
            ("OpenSSH".into(), tools::version_of(&tools.ssh, &["-V"])),
            ("PostgreSQL".into(), crate::cluster::postgres_version()),
        ],
        method: vec![
            "One local server for every system (in the bench process): the built-in SQLite MCP server, the same code `agent connect --sqlite` runs, over HTTP at `/mcp`, and `/bytes/<n>` for bulk.".into(),
            format!("Small request: POST of an MCP `tools/call` (`read_query` of `SELECT 1 AS one`, stateless 2026-07-28 revision, {} bytes), answer read whole and checked. The same request for every system: `direct` sends it to the local server; rathole, bore and `ssh -R` carry it as TCP to the local server; Drawbridge sends it to the relay's gateway over HTTPS (`/mcp/sql`, client token from `relay token create --client`), where it is authenticated, classified, decided by Cedar and audited, then carried to `agent connect --sqlite` on the same database.", client::TOOLS_CALL.len()),
            format!("Load: HTTP/1.1 keep-alive, one connection per worker, TCP_NODELAY; concurrency 1, 16 and 64 workers, {secs:.1} s each after {} warm-up requests per worker, all workers at once; p50 and p99 over every request of the level; req/s = requests / time; CPU time a request = the whole machine's busy time over the level (`/proc/stat`, every process: the load client, the relay and agent or the tunnel's two ends, the local server) / requests.", plan.warmup),
            "`drawbridge-quic-nopolicy`: the relay started with the hidden `--bench-disable-policy-and-audit` flag (bearer token and route owner still checked; no JSON-RPC classification, no Cedar, no audit event).".into(),
            format!("Bulk: GET of a 256 MiB streamed body (64 KiB chunks) on a fresh connection, median of {} run(s); through Drawbridge via a second agent (`--http`) on route `bulk`.", plan.bulk_runs),
            format!("Tunnel hop: the bench plays the relay and starts itself again as the far side (a process of its own), which dials it like an agent four times. `quinn` and `tls-yamux`: a bare bidirectional stream ({} bytes and the end of the stream each way, a task per stream on the far side; yamux with the tunnel crate's driver task on both sides, as yamux needs one). `drawbridge-quic` and `drawbridge-tcp`: one empty GET exchange through `relay::forward` (open, head written, response head and body read) to `agent::run` on a stdio route, whose answer comes from the agent itself (406 from the stdio bridge for a GET without an event stream, before any child runs): the agent's task per stream, head decoding, gate decision with the owner's policy, upstream hand-off, answer framing and request line all included, no local server. {} and {} streams in flight, {secs:.1} s each after {} warm-up round trips per stream; same certificates, transport settings and runtime on every system: both sides on one thread (a current-thread tokio runtime each), as `agent connect` and `relay serve` run by default.", crate::tunnel_hop::ECHO_BYTES, crate::tunnel_hop::LEVELS[0], crate::tunnel_hop::LEVELS[1], plan.warmup),
            format!("Breakdown: `tools/call` back to back on one connection, {secs:.1} s after {} warm-up requests, first directly (the local server's own time taken around its MCP service, the code `agent connect --sqlite` runs), then through drawbridge-quic; each request's parts joined by its `x-request-id` from the relay's own figures for it (its log line's `head_us`, `policy_us` and `agent_us`, its audit event's `latency_ms`), as the relay always logs them; p50 and p99 of each part over the requests.", plan.warmup),
            format!("Scale: {} agents in the bench process, each running the agent library's session (QUIC dial, Hello with an agent token, Welcome, pings) on its own route, 64 dialling at once over one UDP socket; relay RSS before and 2 s after all connected.", opts.agents),
            format!("Reconnect: relay stopped with SIGTERM (agents get GoAway) and started again on the same port and state, {} times; time from the signal to the first answered `tools/call`.", plan.reconnect_runs),
            format!("Cluster: the small request through one relay on SQLite (the default), one relay on PostgreSQL (`--database-url`), three relay nodes on one PostgreSQL database (`--cluster-secret-file`; the agent, `--relay-connections` default, holds a session to each), and the same three nodes with the agent on the first only (`--relay-connections 1`: the two others forward each request once, signed, to it). PostgreSQL as the end-to-end tests run it (tests/src/postgres.rs: initdb into a temporary directory, 127.0.0.1, fsync off), a fresh database per setup; one `agent connect --sqlite` over QUIC. Each load worker holds a keep-alive connection to every node and sends its requests to them in turn, so one worker already spreads them evenly; {} and {} workers, {secs:.1} s each after {} warm-up requests per worker, all workers at once. The hop's cost: the c=1 requests of the last setup apart, those to the node with the agent against those forwarded.", crate::cluster::LEVELS[0], crate::cluster::LEVELS[1], plan.warmup),
            "rathole: plain TCP transport and Noise (Noise_NK_25519_ChaChaPoly_BLAKE2s); bore: `bore server` (control port 7835) with a secret; `ssh -R`: a throwaway sshd on loopback with its own host key and an ed25519 user key. Relay and agent log at their default level (info).".into(),
        ],
        total_seconds: took.as_secs_f64(),
    }
}
