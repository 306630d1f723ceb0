//! The MCP sessions the relay keeps track of, as its state holds them: which
//! replica holds each session ([`affinity`]), and the open streams of the
//! legacy HTTP+SSE transport ([`legacy`]).

pub mod affinity;
pub mod legacy;
