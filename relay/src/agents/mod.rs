//! The agents as the request path sees them: which connected sessions serve
//! which routes ([`registry`]), carrying a request to one and its answer
//! back ([`forward`]), and session affinity to replicas ([`affinity`]). The
//! tunnel handshake and control stream are served by `server::agents`.

pub mod affinity;
pub mod forward;
pub mod registry;
