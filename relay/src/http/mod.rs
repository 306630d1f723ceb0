//! The HTTP pieces every part of the relay shares: body types, JSON error
//! answers, content-type checks, the server-sent event splitter, and the
//! serving of axum routers.
//!
//! This module imports nothing else of the relay, so that the gateway, the
//! OAuth server, the grants API and the stream filters can all use it without
//! importing one another.

pub mod body;
pub mod content_type;
pub mod cors;
pub mod early_answer;
pub mod headers;
pub mod origin;
pub mod response;
pub mod router;
pub mod sse_events;
pub mod sse_keepalive;
pub mod standing_stream;
