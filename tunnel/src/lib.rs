//! Drawbridge tunnel transports.
//!
//! One interface — [`TunnelConnection`] with [`SendHalf`]/[`RecvHalf`] streams —
//! over two transports: QUIC (quinn) and, where UDP is blocked, TLS over TCP
//! with yamux on top. Both ends of the tunnel (relay and agent) use this crate;
//! the protocol spoken over the streams is in the `protocol` crate.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod body;
pub mod coalesce;
pub mod conn;
pub mod control;
pub mod error;
pub mod mux;
pub mod quic;
pub mod stream;
pub mod tls;
pub mod udp;

pub use body::TunnelBody;
pub use conn::{Transport, TunnelConnection};
pub use control::ControlReader;
pub use error::TunnelError;
pub use stream::{RecvHalf, SendHalf};
