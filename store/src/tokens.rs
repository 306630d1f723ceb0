//! Agent and client tokens, and route claims (the first owner to serve a
//! route keeps it).

use std::time::Duration;

use crate::token::{Secret, TokenKind};
use crate::StoreError;

/// A token's record (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub kind: TokenKind,
    pub owner: String,
    pub name: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub replaced_by: Option<String>,
}

impl TokenRecord {
    /// Whether the token may be used at `now`, and if not, why.
    pub fn check(&self, now: i64) -> Result<(), TokenRejection> {
        if self.revoked_at.is_some() {
            return Err(TokenRejection::Revoked);
        }
        if matches!(self.expires_at, Some(t) if t <= now) {
            return Err(TokenRejection::Expired);
        }
        Ok(())
    }

    /// A one-word status for listings.
    pub fn status(&self, now: i64) -> &'static str {
        match self.check(now) {
            Ok(()) if self.replaced_by.is_some() => "rotated",
            Ok(()) => "active",
            Err(TokenRejection::Revoked) => "revoked",
            Err(TokenRejection::Expired) => "expired",
            Err(TokenRejection::Unknown) => "unknown",
        }
    }
}

/// Why a presented token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("the token is not known to this relay")]
    Unknown,
    #[error("the token was revoked")]
    Revoked,
    #[error("the token has expired")]
    Expired,
}

/// The outcome of claiming a route name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteClaim {
    /// The route is (now) this owner's.
    Granted,
    /// The route belongs to someone else.
    Taken { owner: String },
    /// The route is free, but the owner already holds `max` routes.
    TooMany { max: u32 },
}

/// Agent and client tokens, and route claims.
#[async_trait::async_trait]
pub trait Tokens: Send + Sync {
    /// Creates a token and returns its record and its secret (shown once).
    async fn create_token(
        &self,
        kind: TokenKind,
        owner: &str,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<(TokenRecord, Secret), StoreError>;

    /// Every token, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// One token by id.
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// The token whose secret is `presented`, whatever its state.
    async fn token_by_secret(&self, presented: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// Records that a token was used at `at` (no change is fed: it changes
    /// nothing a consumer keeps).
    async fn touch_token(&self, id: &str, at: i64) -> Result<(), StoreError>;

    /// Revokes a token at once.
    async fn revoke_token(&self, id: &str) -> Result<TokenRecord, StoreError>;

    /// Issues a successor with the same kind, owner and name. The old token
    /// stays valid for `grace`, then expires.
    async fn rotate_token(
        &self,
        id: &str,
        grace: Duration,
        expires_at: Option<i64>,
    ) -> Result<(TokenRecord, Secret), StoreError>;

    /// Claims `name` for `owner`, refusing a new name to an owner who
    /// already holds `max` routes (0: no cap). Counting and claiming are one
    /// transaction, so concurrent claims cannot pass the cap.
    async fn claim_route(
        &self,
        name: &str,
        owner: &str,
        max: u32,
    ) -> Result<RouteClaim, StoreError>;

    /// The owner of a claimed route.
    async fn route_owner(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Every claimed route and its owner, by name.
    async fn list_routes(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// Releases a route claim so another owner may take the name. Its tool
    /// pins and its grants go with it. False if it was not claimed.
    async fn release_route(&self, name: &str) -> Result<bool, StoreError>;
}
