//! The frames that open each exchange stream.
//!
//! The relay opens one bidirectional stream per client request and writes a
//! [`StreamOpen`] frame; the request body follows as raw bytes up to the end of
//! the relay's send direction. The agent answers with one [`ResponseHead`]
//! frame, then the response body as raw bytes up to the end of its send
//! direction.

use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

use crate::{DecodeError, FrameError, FrameLimit};

/// At most this many groups in an [`Identity`] (protocol version 4).
pub const MAX_GROUPS: usize = 256;
/// At most this many bytes in one group's name.
pub const MAX_GROUP_LEN: usize = 256;

/// The first frame on a relay-opened stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamOpen {
    Exchange(ExchangeHead),
}

/// One HTTP request, as the relay forwards it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeHead {
    /// The route this request was sent to.
    pub route: String,
    /// The HTTP method.
    pub method: String,
    /// The path below the route's prefix (always starting with `/`, empty path
    /// sent as `/`), with the query string.
    pub path: String,
    /// End-to-end request headers. Hop-by-hop headers and the client's
    /// `Authorization` are never included.
    pub headers: Vec<Header>,
    /// Who the relay authenticated.
    pub identity: Identity,
    /// The relay's id for this request (also in its logs and audit).
    pub request_id: String,
    /// The MCP session, when the request belongs to one.
    pub session: Option<String>,
    /// What follows the head on the stream.
    pub body: BodyKind,
    /// The grants in force on the route (`agent share`), which the relay
    /// applied on top of the owner's policy: the agent applies them too.
    pub grants: Vec<RouteGrant>,
}

/// A grant the route's owner made at the relay (`agent share`): the grantee
/// may use the route within it, until it expires. Grants only add permits to
/// the owner's policy (see `policy::Grant`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteGrant {
    pub id: String,
    /// `bob@example.com` or `@example.com`.
    pub with: String,
    /// The only tools the grantee may call; `None`: any.
    pub tools: Option<Vec<String>>,
    pub read_only: bool,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// The resources the grantee may read: URI patterns, `*` matching any
    /// run of characters; empty: none (protocol version 5).
    pub resources: Vec<String>,
    /// The prompts the grantee may get: name patterns, the same way;
    /// empty: none (protocol version 5).
    pub prompts: Vec<String>,
}

impl RouteGrant {
    /// This grant as protocol versions 3 and 4 write it: without resources
    /// and prompts.
    pub fn as_v4(&self) -> RouteGrantV4<'_> {
        RouteGrantV4 {
            id: &self.id,
            with: &self.with,
            tools: &self.tools,
            read_only: self.read_only,
            expires_at: self.expires_at,
        }
    }
}

/// [`RouteGrant`] of protocol versions 3 and 4 (encoding only): no
/// resources, no prompts. An agent of those versions lets a grantee read
/// every resource and get every prompt the owner's policy allows; the relay
/// has already refused what the grant does not name.
#[derive(Debug, Serialize)]
pub struct RouteGrantV4<'a> {
    pub id: &'a str,
    pub with: &'a str,
    pub tools: &'a Option<Vec<String>>,
    pub read_only: bool,
    pub expires_at: Option<i64>,
}

impl ExchangeHead {
    /// This head as protocol version 4 writes it (grants without resources
    /// and prompts): what a relay sends an agent that said version 4.
    pub fn as_v4(&self) -> StreamOpenV4<'_> {
        StreamOpenV4::Exchange(ExchangeHeadV4 {
            route: &self.route,
            method: &self.method,
            path: &self.path,
            headers: &self.headers,
            identity: &self.identity,
            request_id: &self.request_id,
            session: &self.session,
            body: self.body,
            grants: self.grants.iter().map(RouteGrant::as_v4).collect(),
        })
    }

    /// This head as protocol version 3 writes it (no groups in the
    /// identity): what a relay sends an agent that said version 3.
    pub fn as_v3(&self) -> StreamOpenV3<'_> {
        StreamOpenV3::Exchange(ExchangeHeadV3 {
            route: &self.route,
            method: &self.method,
            path: &self.path,
            headers: &self.headers,
            identity: self.identity.as_v3(),
            request_id: &self.request_id,
            session: &self.session,
            body: self.body,
            grants: self.grants.iter().map(RouteGrant::as_v4).collect(),
        })
    }

    /// This head as protocol version 2 writes it (no groups, no grants):
    /// what a relay sends an agent that said version 2 in its hello.
    pub fn as_v2(&self) -> StreamOpenV2<'_> {
        StreamOpenV2::Exchange(ExchangeHeadV2 {
            route: &self.route,
            method: &self.method,
            path: &self.path,
            headers: &self.headers,
            identity: self.identity.as_v3(),
            request_id: &self.request_id,
            session: &self.session,
            body: self.body,
        })
    }
}

/// Reads the [`StreamOpen`] frame that starts an exchange stream and checks
/// what postcard alone cannot: the identity's groups are within
/// [`MAX_GROUPS`] and [`MAX_GROUP_LEN`].
pub async fn read_exchange<R: AsyncRead + Unpin>(recv: &mut R) -> Result<ExchangeHead, FrameError> {
    let StreamOpen::Exchange(head) =
        crate::read_frame::<StreamOpen, _>("exchange", recv, FrameLimit::HEAD).await?;
    head.identity.check_groups()?;
    Ok(head)
}

/// [`StreamOpen`] of protocol version 4 (encoding only).
#[derive(Debug, Serialize)]
pub enum StreamOpenV4<'a> {
    Exchange(ExchangeHeadV4<'a>),
}

/// [`ExchangeHead`] of protocol version 4: the same fields, with grants
/// without resources and prompts (postcard encodes these borrowed fields
/// exactly as the owned ones).
#[derive(Debug, Serialize)]
pub struct ExchangeHeadV4<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [Header],
    pub identity: &'a Identity,
    pub request_id: &'a str,
    pub session: &'a Option<String>,
    pub body: BodyKind,
    pub grants: Vec<RouteGrantV4<'a>>,
}

/// [`StreamOpen`] of protocol version 3 (encoding only).
#[derive(Debug, Serialize)]
pub enum StreamOpenV3<'a> {
    Exchange(ExchangeHeadV3<'a>),
}

/// [`ExchangeHead`] of protocol version 3: the same fields, with an identity
/// without groups (postcard encodes these borrowed fields exactly as the
/// owned ones).
#[derive(Debug, Serialize)]
pub struct ExchangeHeadV3<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [Header],
    pub identity: IdentityV3<'a>,
    pub request_id: &'a str,
    pub session: &'a Option<String>,
    pub body: BodyKind,
    pub grants: Vec<RouteGrantV4<'a>>,
}

/// [`StreamOpen`] of protocol version 2 (encoding only).
#[derive(Debug, Serialize)]
pub enum StreamOpenV2<'a> {
    Exchange(ExchangeHeadV2<'a>),
}

/// [`ExchangeHead`] of protocol version 2: the same fields, without grants
/// and with an identity without groups (postcard encodes these borrowed
/// fields exactly as the owned ones).
#[derive(Debug, Serialize)]
pub struct ExchangeHeadV2<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [Header],
    pub identity: IdentityV3<'a>,
    pub request_id: &'a str,
    pub session: &'a Option<String>,
    pub body: BodyKind,
}

/// The request body that follows an [`ExchangeHead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyKind {
    /// No body: the relay finishes its direction right after the head.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// A body of unknown length (chunked, or HTTP/2 without content-length).
    Streaming,
}

/// An HTTP header. Values are bytes: HTTP allows non-UTF-8 values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

/// The identity the relay verified for a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The person (or the owner of the non-human credential), e.g. an email.
    pub subject: String,
    pub kind: IdentityKind,
    /// The credential's name (a token's name, or an OAuth client id).
    pub credential_name: String,
    /// The groups the relay's upstream identity provider gave the subject
    /// (protocol version 4): the policy's `principal in Group::"…"`. At
    /// most [`MAX_GROUPS`], each at most [`MAX_GROUP_LEN`] bytes
    /// ([`bounded_groups`]).
    pub groups: Vec<String>,
}

impl Identity {
    /// This identity as protocol versions 2 and 3 write it: without groups.
    pub fn as_v3(&self) -> IdentityV3<'_> {
        IdentityV3 {
            subject: &self.subject,
            kind: self.kind,
            credential_name: &self.credential_name,
        }
    }

    /// Refuses more groups, or longer ones, than the protocol allows.
    pub fn check_groups(&self) -> Result<(), DecodeError> {
        if self.groups.len() > MAX_GROUPS {
            return Err(DecodeError::TooManyGroups {
                count: self.groups.len(),
                max: MAX_GROUPS,
            });
        }
        if let Some(g) = self.groups.iter().find(|g| g.len() > MAX_GROUP_LEN) {
            return Err(DecodeError::GroupTooLong {
                len: g.len(),
                max: MAX_GROUP_LEN,
            });
        }
        Ok(())
    }
}

/// The groups an [`Identity`] may carry: those of at most [`MAX_GROUP_LEN`]
/// bytes, the first [`MAX_GROUPS`] of them. What the relay decides with, so
/// that it decides on the same groups as the agent.
pub fn bounded_groups(groups: impl IntoIterator<Item = String>) -> Vec<String> {
    groups
        .into_iter()
        .filter(|g| g.len() <= MAX_GROUP_LEN)
        .take(MAX_GROUPS)
        .collect()
}

/// [`Identity`] of protocol versions 2 and 3 (encoding only): no groups.
#[derive(Debug, Serialize)]
pub struct IdentityV3<'a> {
    pub subject: &'a str,
    pub kind: IdentityKind,
    pub credential_name: &'a str,
}

/// How an identity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentityKind {
    /// A client access token created with `relay token create --client`.
    ClientToken,
    /// An OAuth access token issued by the relay.
    OAuth,
}

/// The agent's answer to an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<Header>,
}
