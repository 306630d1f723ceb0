//! What route owners shared with peers (`agent share`).

use crate::StoreError;

/// One grant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub id: String,
    pub route: String,
    /// `bob@example.com` or `@example.com` (lowercased).
    pub grantee: String,
    /// The only tools the grantee may call; `None`: any.
    pub tools: Option<Vec<String>>,
    /// The resources the grantee may read (URI patterns); empty: none.
    pub resources: Vec<String>,
    /// The prompts the grantee may get (name patterns); empty: none.
    pub prompts: Vec<String>,
    pub read_only: bool,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// A grant to record.
pub struct NewGrant<'a> {
    pub route: &'a str,
    pub grantee: &'a str,
    pub tools: Option<&'a [String]>,
    pub resources: &'a [String],
    pub prompts: &'a [String],
    pub read_only: bool,
    pub created_by: &'a str,
    pub expires_at: Option<i64>,
}

/// Grants of routes.
#[async_trait::async_trait]
pub trait Grants: Send + Sync {
    /// Records a grant; returns it with its new id.
    async fn create_grant(&self, grant: &NewGrant<'_>) -> Result<GrantRecord, StoreError>;

    /// The grants of a route that are not revoked (expired ones too: expiry
    /// is the reader's to check), oldest first.
    async fn route_grants(&self, route: &str) -> Result<Vec<GrantRecord>, StoreError>;

    /// Every grant not revoked on the routes `owner` owns (expired ones
    /// too), optionally of one route; by route, then oldest first.
    async fn owner_grants(
        &self,
        owner: &str,
        route: Option<&str>,
    ) -> Result<Vec<GrantRecord>, StoreError>;

    /// One grant that is not revoked.
    async fn grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError>;

    /// Revokes a grant. False if there was no such live grant.
    async fn revoke_grant(&self, id: &str) -> Result<bool, StoreError>;
}
