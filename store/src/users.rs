//! Local accounts, and the groups an upstream identity provider gave for an
//! email at its latest sign-in through it.

use crate::StoreError;

/// Local accounts and identity groups.
#[async_trait::async_trait]
pub trait Users: Send + Sync {
    /// Adds a local account with an already hashed password.
    async fn add_user(&self, email: &str, password_hash: &str) -> Result<(), StoreError>;

    /// The stored password hash of a local account.
    async fn user_password_hash(&self, email: &str) -> Result<Option<String>, StoreError>;

    /// Every local account and when it was added, by email.
    async fn list_users(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Removes an account; its sessions end, its consents go and its OAuth
    /// tokens are revoked.
    async fn remove_user(&self, email: &str) -> Result<(), StoreError>;

    /// Records the groups the provider gave for `email`.
    async fn set_groups(&self, email: &str, groups: &[String]) -> Result<(), StoreError>;

    /// The groups last recorded for `email` (none if never).
    async fn groups(&self, email: &str) -> Result<Vec<String>, StoreError>;
}
