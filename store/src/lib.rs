//! The relay's state: records, one async trait per aggregate, a typed
//! [`StoreError`] that names no backend, and a change feed
//! ([`Changes::changes`]) that tells every consumer what changed, whatever
//! process changed it.
//!
//! The relay holds an `Arc<dyn Store>` chosen at runtime. Backends: SQLite
//! ([`sqlite::SqliteStore`], one file in the state directory) and, with the
//! feature `postgres`, PostgreSQL (`postgres::PostgresStore`, several relay
//! nodes on one database). Every backend passes the same [`conformance`]
//! suite.

pub mod audit;
pub mod changes;
pub mod conformance;
mod error;
pub mod grants;
pub mod leases;
pub mod nodes;
pub mod oauth;
pub mod pins;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod secrets;
pub mod sign_ins;
pub mod sqlite;
pub mod token;
pub mod tokens;
pub mod users;

use std::time::{SystemTime, UNIX_EPOCH};

pub use audit::{AuditEvents, AuditFilter, ShippedEvent};
pub use changes::{Change, ChangeFeed, ChangeHook, Changes};
pub use error::StoreError;
pub use grants::{GrantRecord, Grants, NewGrant};
pub use leases::{Lease, Leases};
pub use nodes::{AgentSession, Node, Nodes, SessionHolder};
pub use oauth::{
    AuthCode, CodeCheck, CodeRedemption, DevicePoll, DeviceRequest, Grant, IssuedTokens, OAuth,
    OAuthClient, OAuthToken, OAuthTokenKind, RefreshCheck, RefreshOutcome, RefreshVerdict, Refusal,
    Session, TokenTtl, ACCESS_PREFIX, REFRESH_PREFIX,
};
pub use pins::{PendingChange, Pins, Repinned, ToolPin};
pub use secrets::Secrets;
pub use sign_ins::{PendingSignIn, Remembered, SignInBounds, SignIns};
pub use token::{Secret, TokenKind};
pub use tokens::{RouteClaim, TokenRecord, TokenRejection, Tokens};
pub use users::Users;

/// Every aggregate of the state, and its change feed: what the relay holds.
pub trait Store:
    Tokens
    + Grants
    + Pins
    + OAuth
    + SignIns
    + Users
    + Nodes
    + AuditEvents
    + Secrets
    + Leases
    + Changes
    + Send
    + Sync
{
}

impl<
        T: Tokens
            + Grants
            + Pins
            + OAuth
            + SignIns
            + Users
            + Nodes
            + AuditEvents
            + Secrets
            + Leases
            + Changes
            + Send
            + Sync,
    > Store for T
{
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
