//! What the agent reports as it goes: each exchange's summary, the live line
//! of each request, and the [`Reporter`] the command line (or a test) gives
//! `agent connect` to show them.

use std::time::Duration;

/// What one exchange was, for the agent's live line.
#[derive(Debug, Clone)]
pub struct Summary {
    /// `tools/call read_query`, `initialize`, `GET`, `batch of 3`.
    pub what: String,
    /// Whether the laptop let it through.
    pub allowed: bool,
    /// The policies that decided (for a denial, the ones that forbade).
    pub policies: Vec<String>,
}

/// One request as the agent's live line shows it.
#[derive(Debug, Clone)]
pub struct RequestLine {
    pub request_id: String,
    /// Who asked (as the relay verified).
    pub identity: String,
    pub summary: Summary,
    /// From the stream's arrival to the end of the answer.
    pub elapsed: Duration,
}

/// What the agent reports as it goes (the CLI prints it; tests read it).
pub trait Reporter: Send + Sync {
    fn live(&self, route: &str, url: &str, transport: tunnel::Transport);
    fn reconnecting(&self, reason: &str, delay: Duration);
    /// One request served (or refused) by this agent.
    fn request(&self, line: &RequestLine);
}

/// The agent's line for one request: `time identity what → decision (rules)
/// latency`, e.g.
/// `2026-11-22T10:00:00Z alice@example.com tools/call read_query → allow (owner) 2.1ms`.
pub fn live_line(line: &RequestLine, now: std::time::SystemTime) -> String {
    let s = &line.summary;
    let decision = if s.allowed { "allow" } else { "DENY" };
    let rules = if s.policies.is_empty() {
        String::new()
    } else {
        format!(" ({})", s.policies.join(", "))
    };
    format!(
        "{} {} {} → {decision}{rules} {:.1?}",
        humantime::format_rfc3339_seconds(now),
        line.identity,
        s.what,
        line.elapsed
    )
}
