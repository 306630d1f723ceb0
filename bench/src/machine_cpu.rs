//! The whole machine's CPU time over a load level, from `/proc/stat`: every
//! process counts (the load client, the relay and the agent or the other
//! tunnel's two ends, the local server), so systems that split their work
//! differently compare fairly.

/// The machine's CPU counters at one moment (clock ticks, all CPUs).
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    busy: u64,
    total: u64,
    cpus: u64,
}

/// What the machine's CPUs did between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUse {
    /// The share of the machine busy (0..=1): 1 is every CPU, all the time.
    pub busy: f64,
    /// The CPUs the machine has.
    pub cpus: u64,
}

impl CpuUse {
    /// CPU time per request, in µs, for `rate` requests a second over the
    /// same span.
    pub fn us_per_request(&self, rate: f64) -> Option<f64> {
        (rate > 0.0).then(|| self.busy * self.cpus as f64 / rate * 1e6)
    }
}

/// Reads the counters now; `None` where `/proc/stat` is not there.
pub fn sample() -> Option<CpuSample> {
    parse(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The use between `before` and `after`.
pub fn between(before: CpuSample, after: CpuSample) -> Option<CpuUse> {
    let total = after.total.checked_sub(before.total)?;
    let busy = after.busy.checked_sub(before.busy)?;
    (total > 0).then(|| CpuUse {
        busy: busy as f64 / total as f64,
        cpus: after.cpus,
    })
}

/// The first line of `/proc/stat` (`cpu  user nice system idle iowait irq
/// softirq steal …`): idle and iowait are idle, the rest busy; and the
/// number of `cpuN` lines.
fn parse(stat: &str) -> Option<CpuSample> {
    let mut lines = stat.lines();
    let fields: Vec<u64> = lines
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 5 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields[4];
    let cpus = lines
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count() as u64;
    Some(CpuSample {
        busy: total - idle,
        total,
        cpus: cpus.max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nintr 1\n";
    const AFTER: &str = "cpu  250 0 100 850 50 0 0 0 0 0\ncpu0 125 0 50 425 25 0 0 0 0 0\ncpu1 125 0 50 425 25 0 0 0 0 0\nintr 2\n";

    #[test]
    fn busy_is_what_is_not_idle_or_waiting_and_cpus_are_counted() {
        let (Some(a), Some(b)) = (parse(BEFORE), parse(AFTER)) else {
            panic!("both parse");
        };
        let used = between(a, b).expect("time passed");
        assert_eq!(used.cpus, 2);
        // 200 busy ticks of 250.
        assert!((used.busy - 0.8).abs() < 1e-9, "{used:?}");
        // 1.6 CPUs for 1000 requests a second: 1600 µs each.
        let per = used.us_per_request(1000.0).expect("a rate");
        assert!((per - 1600.0).abs() < 1e-6, "{per}");
        assert_eq!(used.us_per_request(0.0), None);
    }

    #[test]
    fn a_stat_file_it_cannot_read_gives_nothing() {
        assert!(parse("").is_none());
        assert!(parse("intr 1\n").is_none());
        assert!(parse("cpu  1 2 x 4 5\n").is_none());
        // Counters that went back (a different machine): no figure.
        let (Some(a), Some(b)) = (parse(AFTER), parse(BEFORE)) else {
            panic!("both parse");
        };
        assert!(between(a, b).is_none());
    }
}
