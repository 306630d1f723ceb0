//! Sign-ins under way at an upstream identity provider: what the relay
//! remembers between sending a browser to the provider and the provider's
//! answer (`GET /oauth/callback/<provider>`), under the sign-in's random
//! `state` (stored as its SHA-256). Shared by every node of a cluster, so
//! that the answer may reach any node; taken once, so that a replay of the
//! answer finds nothing.

use crate::StoreError;

/// A sign-in sent to the provider, waiting for its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSignIn {
    /// The provider's slug (`oidc`, `github`).
    pub provider: String,
    /// SHA-256 of the id of the browser session that started it.
    pub session_hash: Vec<u8>,
    /// The client address that started it (its rate-limit key).
    pub address: String,
    /// The PKCE verifier of the code exchange.
    pub verifier: String,
    pub nonce: String,
    /// Where the signed-in browser goes back to.
    pub back: String,
    /// When it started, in Unix milliseconds.
    pub started_ms: i64,
}

/// How many sign-ins may be pending, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInBounds {
    /// A sign-in older than this (milliseconds) is forgotten.
    pub ttl_ms: i64,
    /// Most pending per browser session: a new one drops its oldest.
    pub per_session: usize,
    /// Most pending per client address: beyond, a new one is refused.
    pub per_address: usize,
    /// Most pending in all: beyond, a new one is refused.
    pub total: usize,
}

/// What became of a sign-in to remember.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remembered {
    Kept,
    /// Its address has [`SignInBounds::per_address`] pending; the oldest
    /// started at `oldest_ms`.
    AddressFull {
        oldest_ms: i64,
    },
    /// [`SignInBounds::total`] are pending.
    Full,
}

/// The pending upstream sign-ins.
#[async_trait::async_trait]
pub trait SignIns: Send + Sync {
    /// Keeps `pending` under `state`, within `bounds` (counted at
    /// `pending.started_ms`, over every node): expired ones are forgotten,
    /// then the session's oldest beyond its bound, then the address's and
    /// the total bounds are checked.
    async fn remember_sign_in(
        &self,
        state: &str,
        pending: &PendingSignIn,
        bounds: SignInBounds,
    ) -> Result<Remembered, StoreError>;

    /// Takes the sign-in under `state` if it is younger than `ttl_ms` at
    /// `now_ms`: of concurrent takes (on any node) exactly one gets it, and
    /// it is gone afterwards.
    async fn take_sign_in(
        &self,
        state: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<PendingSignIn>, StoreError>;
}
