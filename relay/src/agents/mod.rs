//! The agents as the request path sees them: which connected sessions serve
//! which routes ([`registry`]), and carrying a request to one and its answer
//! back ([`forward`]). The tunnel handshake and control stream are served by
//! `server::agents`.

pub mod forward;
pub mod registry;
