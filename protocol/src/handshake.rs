//! The versioned handshake on the first bidirectional stream.
//!
//! The agent opens the stream and sends one [`Hello`] frame; the relay answers
//! with one [`HelloReply`] frame. The stream then carries [`crate::Control`]
//! messages for the life of the connection.
//!
//! Compatibility rules, so that any two versions can at least explain why they
//! cannot talk:
//! * `Hello.version` is the first field of `Hello` forever, so a relay can read
//!   it with [`peek_version`] whatever the rest of the message looks like.
//! * `HelloReply::Refused` is variant 1 forever, and [`Refusal`] only ever gains
//!   new [`RefusalCode`]s at the end.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;

/// What the agent says first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the agent speaks. Must stay the first field.
    pub version: u16,
    /// The agent's credential (an agent token). Never logged.
    pub credential: String,
    /// The agent's own version, for the relay's logs and refusals.
    pub agent_version: String,
    /// Random per agent process. A reconnecting agent presents the same id, so
    /// the relay drops the stale session instead of answering "already bound".
    pub instance_id: [u8; 16],
    /// The routes this agent serves.
    pub routes: Vec<RouteOffer>,
}

/// One route an agent offers to serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteOffer {
    pub name: String,
    pub kind: UpstreamKind,
    /// The route owner's policy as Cedar text (compiled from `agent connect`'s
    /// flags, or read from `--policy FILE`). `None`: only the owner may use the
    /// route. The relay validates it against its schema and refuses the hello
    /// with [`RefusalCode::InvalidPolicy`] if it does not hold.
    pub policy: Option<String>,
    /// The owner approves tools whose definitions changed since the relay
    /// pinned them (`agent connect --accept-tool-changes`).
    pub accept_tool_changes: bool,
}

/// What kind of local server answers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpstreamKind {
    /// A local MCP server over Streamable HTTP.
    Http,
    /// A local MCP server run as a child process (stdio).
    Stdio,
    /// The agent's built-in SQLite MCP server.
    Sqlite,
    /// A local HTTP server that is not an MCP server (`--plain-http`): the
    /// relay authorizes each request as a whole and does not read bodies.
    PlainHttp,
}

/// The relay's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    Welcome(Welcome),
    /// Variant 1, forever.
    Refused(Refusal),
}

/// The relay accepted the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version both sides will speak.
    pub version: u16,
    pub relay_version: String,
    /// The owner the credential belongs to.
    pub owner: String,
    /// Identifies this session in the relay's logs.
    pub session_id: u64,
    pub routes: Vec<AcceptedRoute>,
    /// How often the agent should ping on the control stream.
    pub keepalive_interval_ms: u32,
}

/// A route the relay now sends to this agent, and where clients reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedRoute {
    pub name: String,
    pub public_url: String,
}

/// The relay refused the agent. `message` is written for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: RefusalCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: RefusalCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// Why the relay refused. New codes are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalCode {
    /// The agent speaks a protocol version the relay does not.
    VersionMismatch,
    /// The credential is unknown or malformed.
    InvalidCredential,
    /// The credential was revoked.
    CredentialRevoked,
    /// The credential expired.
    CredentialExpired,
    /// The credential is not an agent credential (a client token, say).
    WrongCredentialKind,
    /// A route name is not a valid name.
    InvalidRoute,
    /// A route belongs to another owner.
    RouteTaken,
    /// The agent offered no routes.
    NoRoutes,
    /// The relay is shutting down or full; try again later.
    Unavailable,
    /// A route's owner policy does not parse or validate.
    InvalidPolicy,
}

impl RefusalCode {
    /// Whether trying again later can succeed without a person changing something.
    pub fn is_retryable(self) -> bool {
        matches!(self, RefusalCode::Unavailable)
    }
}

/// Reads the protocol version from the front of an encoded [`Hello`] without
/// decoding the rest, so that a relay can refuse a newer or older agent with a
/// precise message even when the rest of its `Hello` has another shape.
pub fn peek_version(hello_payload: &[u8]) -> Result<u16, DecodeError> {
    postcard::take_from_bytes::<u16>(hello_payload)
        .map(|(v, _)| v)
        .map_err(|source| DecodeError::Malformed {
            what: "hello",
            source,
        })
}

/// The message a relay sends to an agent whose version it does not speak.
pub fn version_mismatch_message(agent_version: u16, min: u16, max: u16) -> String {
    if agent_version > max {
        format!(
            "this relay speaks tunnel protocol {min}..={max} but the agent speaks {agent_version}: \
             upgrade the relay (or use an agent release that speaks protocol {max})"
        )
    } else {
        format!(
            "this relay speaks tunnel protocol {min}..={max} but the agent speaks {agent_version}: \
             upgrade the agent"
        )
    }
}
