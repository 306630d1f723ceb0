//! The OAuth side of the state: registered clients, remembered consents,
//! login sessions, authorization codes, the access and refresh tokens
//! issued from them, and device authorization requests. Every secret
//! (session id, code, token, device code) is stored as its SHA-256 only.

use crate::tokens::TokenRejection;
use crate::StoreError;

/// Prefix of OAuth access tokens (bearer tokens for one route).
pub const ACCESS_PREFIX: &str = "dboa_";
/// Prefix of OAuth refresh tokens.
pub const REFRESH_PREFIX: &str = "dbor_";

/// A client registered through dynamic client registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub created_at: i64,
}

/// A login session (the browser's cookie names it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub csrf: String,
    pub email: Option<String>,
}

/// What an authorization code was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCode {
    /// Every token issued from this code shares it.
    pub family: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub resource: String,
    pub email: String,
    pub scope: String,
    pub expires_at: i64,
}

/// Why a token request is refused: an OAuth error code and its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub error: &'static str,
    pub description: String,
}

impl Refusal {
    pub fn new(error: &'static str, description: impl Into<String>) -> Refusal {
        Refusal {
            error,
            description: description.into(),
        }
    }
}

/// Checks a code at its first use; `Ok`: tokens are issued for it, in the
/// same transaction as the redemption.
pub type CodeCheck = Box<dyn FnOnce(&AuthCode) -> Result<(), Refusal> + Send>;

/// Lifetimes of the tokens issued, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTtl {
    pub access: i64,
    pub refresh: i64,
}

/// The outcome of redeeming a code.
#[derive(Debug, PartialEq, Eq)]
pub enum CodeRedemption {
    /// First use, and the check passed: the tokens issued for it.
    Issued(Box<AuthCode>, IssuedTokens),
    /// First use, and the check refused it (the code is spent all the same).
    Refused(Refusal),
    /// The code was redeemed before: its tokens are now revoked.
    Replayed,
    Unknown,
}

/// What to do with a refresh token presented for an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshVerdict {
    /// Rotate it, and issue a pair with this scope.
    Issue { scope: String },
    /// Refuse, changing nothing.
    Refuse(Refusal),
    /// Refuse, and revoke every token of its family.
    RevokeFamily(Refusal),
}

/// Judges a refresh token (found by its secret, a refresh token, in any
/// state) inside the exchange's transaction.
pub type RefreshCheck = Box<dyn FnOnce(&OAuthToken) -> RefreshVerdict + Send>;

/// The outcome of a refresh token exchange.
#[derive(Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// Rotated, and a new pair issued (one transaction).
    Issued(IssuedTokens),
    /// Not a refresh token of this store.
    Unknown,
    /// Refused by the check (its family revoked if it said so).
    Refused(Refusal),
    /// Exchanged before (a reuse): every token of its family is now revoked.
    Reused(OAuthToken),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthTokenKind {
    Access,
    Refresh,
}

impl OAuthTokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthTokenKind::Access => "access",
            OAuthTokenKind::Refresh => "refresh",
        }
    }
}

/// An issued OAuth token's record (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthToken {
    pub id: String,
    pub kind: OAuthTokenKind,
    pub family: String,
    pub client_id: String,
    pub email: String,
    /// The one route URL this token is for (its audience).
    pub resource: String,
    pub scope: String,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// Set when a refresh token was exchanged for its successor.
    pub rotated_at: Option<i64>,
}

impl OAuthToken {
    /// Whether the token may be used at `now`.
    pub fn check(&self, now: i64) -> Result<(), TokenRejection> {
        if self.revoked_at.is_some() {
            return Err(TokenRejection::Revoked);
        }
        if self.expires_at <= now {
            return Err(TokenRejection::Expired);
        }
        Ok(())
    }
}

/// A freshly issued access + refresh pair.
#[derive(Debug, PartialEq, Eq)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
    pub scope: String,
}

/// Who and what a token grant is for.
pub struct Grant<'a> {
    pub family: &'a str,
    pub client_id: &'a str,
    pub email: &'a str,
    pub resource: &'a str,
    pub scope: &'a str,
}

/// A device authorization request waiting for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    /// Normalized: eight letters, no dash.
    pub user_code: String,
    pub client_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// What a poll of the token endpoint with a device code finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePoll {
    Unknown,
    Expired,
    Denied,
    /// Polled faster than the interval: it is now 5 s longer.
    SlowDown,
    Pending,
    /// Approved by this person; the device code is now spent.
    Approved(String),
}

/// The OAuth authorization server's state.
#[async_trait::async_trait]
pub trait OAuth: Send + Sync {
    /// Registers a client; an error if its id exists.
    async fn insert_client(&self, client: &OAuthClient) -> Result<(), StoreError>;

    /// Stores (or refreshes) a client described by a client metadata
    /// document: its id is the document's URL.
    async fn upsert_client(&self, client: &OAuthClient) -> Result<(), StoreError>;

    async fn client(&self, client_id: &str) -> Result<Option<OAuthClient>, StoreError>;

    /// The scope `email` consented to for `client_id` on `route`, if any.
    async fn consent_scope(
        &self,
        email: &str,
        client_id: &str,
        route: &str,
    ) -> Result<Option<String>, StoreError>;

    /// Records (or replaces) a consent.
    async fn record_consent(
        &self,
        email: &str,
        client_id: &str,
        route: &str,
        scope: &str,
    ) -> Result<(), StoreError>;

    /// Starts a session; returns its secret id (the cookie's value).
    async fn create_session(
        &self,
        email: Option<&str>,
        ttl_secs: i64,
    ) -> Result<String, StoreError>;

    /// A live session by its secret id.
    async fn session(&self, id: &str) -> Result<Option<Session>, StoreError>;

    async fn end_session(&self, id: &str) -> Result<(), StoreError>;

    /// Stores a code; returns its secret.
    async fn insert_code(&self, code: &AuthCode) -> Result<String, StoreError>;

    /// Redeems a code: the first redemption gets it, `check` judges it, and
    /// if it passes a token pair is issued for it, all in one transaction;
    /// any later redemption revokes every token issued from it (RFC 6749
    /// §4.1.2).
    async fn redeem_code(
        &self,
        secret: &str,
        check: CodeCheck,
        ttl: TokenTtl,
    ) -> Result<CodeRedemption, StoreError>;

    /// Issues an access token and a refresh token for one grant.
    async fn issue_tokens(
        &self,
        grant: &Grant<'_>,
        ttl: TokenTtl,
    ) -> Result<IssuedTokens, StoreError>;

    /// A token's record by its secret, whatever its state.
    async fn oauth_token(&self, secret: &str) -> Result<Option<OAuthToken>, StoreError>;

    /// Exchanges a refresh token: `check` judges it; rotation and the new
    /// pair are one transaction, so of concurrent exchanges exactly one wins.
    async fn refresh(
        &self,
        presented: &str,
        check: RefreshCheck,
        ttl: TokenTtl,
    ) -> Result<RefreshOutcome, StoreError>;

    /// Revokes every token of a grant.
    async fn revoke_family(&self, family: &str) -> Result<(), StoreError>;

    /// Revokes one token.
    async fn revoke_oauth_token(&self, id: &str) -> Result<(), StoreError>;

    /// Starts a device authorization; returns the device code (secret).
    /// `user_code` must be unused ([`StoreError::Conflict`]: the caller
    /// retries with another one).
    async fn insert_device_code(
        &self,
        user_code: &str,
        client_id: &str,
        ttl_secs: i64,
        interval_secs: i64,
    ) -> Result<String, StoreError>;

    /// A pending, unexpired request by its (normalized) user code.
    async fn pending_device(&self, user_code: &str) -> Result<Option<DeviceRequest>, StoreError>;

    /// The person's answer to a pending request: approved as `email`, or
    /// denied. False if no such request is pending.
    async fn decide_device(
        &self,
        user_code: &str,
        email: &str,
        approve: bool,
    ) -> Result<bool, StoreError>;

    /// One poll of the token endpoint with a device code; an approved code
    /// is spent by exactly one poll.
    async fn poll_device(&self, device_code: &str) -> Result<DevicePoll, StoreError>;
}
