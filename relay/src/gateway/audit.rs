//! What the request's audit events say, as the phases learn it: who asked,
//! what each JSON-RPC message is and what the policy decided. The events
//! are written when the response ends ([`Trail::attach`]); a refusal's rule
//! is recorded by [`super::Refusal::answer`].

use super::classify::Classified;
use super::decide::{Allowed, Verdict};
use super::Refusal;
use crate::gateway::authenticated::Authenticated;
use crate::gateway::trail::Trail;
use crate::state::SharedState;

/// Who asks, as authenticated.
pub fn identify(trail: &mut Trail, who: &Authenticated) {
    trail.identity = who.subject.clone();
    trail.groups = who.groups.clone();
    trail.client = who.client_id.clone();
}

/// Records the messages of `body` with the `verdict` on each, and the rule
/// that allowed the request; a refusal is passed on (to be recorded once,
/// with the rest of its answer).
pub fn record(
    state: &SharedState,
    trail: &mut Trail,
    body: &Classified,
    verdict: Verdict,
) -> Result<Allowed, Refusal> {
    if let Classified::Messages(m) = body {
        if verdict.consulted {
            trail.timing.policy_us = Some(m.since.elapsed().as_micros() as u64);
        }
        trail.messages(state, &m.messages, &m.facts, &verdict.decisions);
    }
    let allowed = verdict.outcome?;
    match &allowed.rule {
        Some(rule) => trail.allow(rule),
        // Not judged: not audited either (a benchmark's baseline).
        None => trail.skip(),
    }
    Ok(allowed)
}
