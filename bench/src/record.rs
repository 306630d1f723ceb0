//! One line of `bench/results.json`: a figure for one system in one scenario.

use serde::{Deserialize, Serialize};

/// The systems under test, as they are named in the results.
pub const SYSTEMS: [&str; 8] = [
    "direct",
    "drawbridge-quic",
    "drawbridge-quic-nopolicy",
    "drawbridge-tcp",
    "rathole-tcp",
    "rathole-noise",
    "bore",
    "ssh-r",
];

/// The scenarios, as they are named in the results.
pub const SCENARIOS: [&str; 8] = [
    "small",
    "bulk",
    "scale",
    "reconnect",
    "policy",
    "tunnel",
    "breakdown",
    "cluster",
];

/// One measured figure. Fields that do not apply to a scenario are `null`.
///
/// * `small`: `p50_us`/`p99_us` per request, `rps` at `concurrency` workers.
/// * `bulk`: `mb_per_s` (10^6 bytes/s), median of `runs` downloads.
/// * `scale`: `concurrency` agents; `rss_kib` relay memory per agent;
///   `p50_us`/`p99_us` one agent's dial + handshake; `rps` agents connected
///   per second over the whole run (so the time to connect all of them is
///   `concurrency / rps`).
/// * `reconnect`: `p50_us` median and `p99_us` worst of `runs` relay restarts,
///   from the signal to the first answered request.
/// * `policy`: `p50_us`/`p99_us` of the whole per-message decision
///   (JSON-RPC classification, SQL classification, Cedar), over `runs` messages.
/// * `tunnel`: `p50_us`/`p99_us` per round trip between two processes with
///   `concurrency` streams in flight, `rps` round trips per second, over
///   `runs` round trips; `system` is `quinn` or `tls-yamux` (a bare stream
///   echo) or `drawbridge-quic`/`drawbridge-tcp` (one empty exchange relay →
///   agent → relay through the relay's and the agent's code).
/// * `breakdown`: one `part` of a Drawbridge `tools/call` at one request in
///   flight (see [`crate::breakdown::PARTS`]): `p50_us`/`p99_us` of that
///   part over `runs` requests.
/// * `cluster`: `system` is one of [`crate::cluster::SETUPS`];
///   `p50_us`/`p99_us` per request and `rps` at `concurrency` workers, each
///   request sent to the setup's nodes in turn; for
///   [`crate::cluster::FORWARDING`] at `concurrency` 1 also a `part`
///   (`direct`: requests to the node that holds the agent, `forwarded`: to
///   the others), `runs` requests each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub system: String,
    pub scenario: String,
    pub concurrency: Option<u64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub rps: Option<f64>,
    pub mb_per_s: Option<f64>,
    pub rss_kib: Option<f64>,
    pub runs: Option<u64>,
    /// The part of the request a `breakdown` figure is, or the requests a
    /// `cluster` figure is of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    /// A `small` level's share of the whole machine busy (0..=1), over its
    /// measured time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<f64>,
    /// A `small` level's CPU time per request, in µs: the whole machine's
    /// (every process) over its measured time, divided by its requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_us: Option<f64>,
}

impl Record {
    /// A record with only its system and scenario filled in.
    pub fn new(system: &str, scenario: &str) -> Record {
        Record {
            system: system.to_owned(),
            scenario: scenario.to_owned(),
            concurrency: None,
            p50_us: None,
            p99_us: None,
            rps: None,
            mb_per_s: None,
            rss_kib: None,
            runs: None,
            part: None,
            busy: None,
            cpu_us: None,
        }
    }
}

/// Nearest-rank percentile of sorted samples (`p` in 0..=1).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of unsorted values.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}
