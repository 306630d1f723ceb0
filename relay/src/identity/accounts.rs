//! Local accounts: an email and an argon2id password hash, for a small
//! self-hosted relay (`relay user add|list|remove`).

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;

use crate::error::RelayError;
use crate::store::Store;

/// The shortest password `relay user add` accepts.
pub const MIN_PASSWORD_LEN: usize = 8;

/// Hashes a password (argon2id, default parameters, random salt).
pub fn hash_password(password: &str) -> Result<String, RelayError> {
    let salt = hex::decode(crate::store::token::random_hex(16))
        .map_err(|e| RelayError::Password(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| RelayError::Password(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| RelayError::Password(e.to_string()))
}

/// Adds a local account.
pub async fn add_user(store: &Store, email: &str, password: &str) -> Result<(), RelayError> {
    let email = email.trim();
    let valid = email
        .split_once('@')
        .is_some_and(|(user, domain)| !user.is_empty() && !domain.is_empty())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(RelayError::Config(format!(
            "{email:?} is not an email address"
        )));
    }
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(RelayError::Config(format!(
            "the password must have at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    Ok(store.add_user(email, &hash_password(password)?).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accounts_sign_in_with_their_password_only() {
        let dir =
            std::env::temp_dir().join(format!("dbr-acct-{}", crate::store::token::random_hex(6)));
        let store = Store::open(&dir).expect("open");
        add_user(&store, "alice@example.com", "correct horse")
            .await
            .expect("add");
        assert!(matches!(
            add_user(&store, "alice@example.com", "another one").await,
            Err(RelayError::Store(crate::store::StoreError::UserExists(_)))
        ));
        assert!(add_user(&store, "bob", "long enough").await.is_err());
        assert!(add_user(&store, "bob@example.com", "short").await.is_err());
        let checks = super::super::password_checks::PasswordChecks::default();
        let mut slot = checks.try_slot().expect("slot");
        let stored = store
            .user_password_hash("alice@example.com")
            .await
            .expect("get");
        let nobody = store
            .user_password_hash("nobody@example.com")
            .await
            .expect("get");
        assert!(slot.check(stored.as_deref(), "correct horse"));
        assert!(!slot.check(stored.as_deref(), "wrong horse"));
        assert!(!slot.check(nobody.as_deref(), "correct horse"));
        let stored = stored.expect("some");
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        store
            .remove_user("alice@example.com")
            .await
            .expect("remove");
        let gone = store
            .user_password_hash("alice@example.com")
            .await
            .expect("get");
        assert!(!slot.check(gone.as_deref(), "correct horse"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
