//! The Drawbridge tunnel's wire format, and nothing else.
//!
//! Everything that crosses the tunnel between an agent and a relay is defined
//! here: the versioned [`handshake`], the [`control`] messages exchanged on the
//! first stream for the life of the connection, the per-exchange
//! [`exchange`] headers that open every other stream, and the [`frame`] codec
//! (a big-endian `u32` length prefix followed by a postcard payload) that
//! carries them. There are no sockets and no tasks in this crate: frames are
//! decoded from bytes or from any `AsyncRead`, which makes the codec easy to
//! test and to fuzz.
//!
//! After a stream's opening frame, body bytes flow raw in both directions and
//! the end of a body is the end of that direction of the stream (QUIC `FIN`,
//! yamux `FIN`). A stream that ends with a reset means the exchange was aborted.

#![forbid(unsafe_code)]

pub mod control;
pub mod error;
pub mod exchange;
pub mod frame;
#[doc(hidden)]
pub mod fuzz;
pub mod handshake;
pub mod route;

pub use control::{Control, GoAwayReason};
pub use error::{DecodeError, FrameError};
pub use exchange::{
    bounded_groups, read_exchange, BodyKind, ExchangeHead, ExchangeHeadV2, ExchangeHeadV3,
    ExchangeHeadV4, Header, Identity, IdentityKind, IdentityV3, ResponseHead, RouteGrant,
    RouteGrantV4, StreamOpen, StreamOpenV2, StreamOpenV3, StreamOpenV4, MAX_GROUPS, MAX_GROUP_LEN,
};
pub use frame::{decode_frame, encode_frame, read_frame, write_frame, FrameLimit};
pub use handshake::{
    AcceptedRoute, Hello, HelloReply, Refusal, RefusalCode, RouteOffer, UpstreamKind, Welcome,
};
pub use route::{validate_route_name, RouteNameError};

/// The protocol version this build speaks. A relay speaks every version from
/// [`MIN_PROTOCOL_VERSION`] up, and writes each agent's exchange heads in the
/// version of its hello:
///
/// | version | exchange head                                      | written by              |
/// |---------|----------------------------------------------------|-------------------------|
/// | 2       | no grants, identity without groups                 | [`ExchangeHead::as_v2`] |
/// | 3       | + the route's grants (`agent share`)               | [`ExchangeHead::as_v3`] |
/// | 4       | + the identity's groups from the upstream provider | [`ExchangeHead::as_v4`] |
/// | 5       | + each grant's resources and prompts               | [`StreamOpen`] itself   |
/// | 6       | as 5; the relay may send [`Control::Nodes`]        | [`StreamOpen`] itself   |
pub const PROTOCOL_VERSION: u16 = 6;
/// The first protocol version whose agents are told the cluster's nodes
/// ([`Control::Nodes`]).
pub const NODES_VERSION: u16 = 6;
/// The oldest protocol version this build still accepts from a peer.
pub const MIN_PROTOCOL_VERSION: u16 = 2;
/// The response header in which the agent tells the relay the route owner's
/// word on an exchange that waited for it (`agent connect --approve`):
/// `approved|denied|timeout; by=WHO; at=RFC3339`. The relay writes it into
/// the exchange's audit events and never passes it on to the client.
pub const APPROVAL_HEADER: &str = "drawbridge-approval";
/// The request header in which the relay tells the agent which of its
/// policies allowed an exchange (comma-separated, as its audit writes them),
/// for the owner's inspector (`agent connect --inspect`). The relay drops a
/// client's header of this name and sets its own; the agent removes it
/// before the local server and decides on its own regardless.
pub const RELAY_RULES_HEADER: &str = "drawbridge-relay-rules";
/// The ALPN token that marks a tunnel connection, over QUIC and over TLS on TCP.
pub const ALPN: &[u8] = b"drawbridge/1";
