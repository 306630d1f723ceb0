//! Local accounts and identity groups.

use rusqlite::{params, OptionalExtension};

use super::{changed, SqliteStore};
use crate::changes::Change;
use crate::users::Users;
use crate::StoreError;

fn user_changed(c: &rusqlite::Connection, email: &str) -> rusqlite::Result<()> {
    changed(
        c,
        &Change::User {
            email: email.to_owned(),
        },
    )
}

#[async_trait::async_trait]
impl Users for SqliteStore {
    async fn add_user(&self, email: &str, password_hash: &str) -> Result<(), StoreError> {
        let (email, password_hash) = (email.to_owned(), password_hash.to_owned());
        self.run(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "INSERT INTO users (email, password_hash, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(email) DO NOTHING",
                params![email, password_hash, crate::now()],
            )?;
            if n == 0 {
                return Err(StoreError::UserExists(email).into());
            }
            user_changed(&tx, &email)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn user_password_hash(&self, email: &str) -> Result<Option<String>, StoreError> {
        let email = email.to_owned();
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT password_hash FROM users WHERE email = ?1",
                [email],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.run(|c| {
            let mut stmt = c.prepare("SELECT email, created_at FROM users ORDER BY email")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn remove_user(&self, email: &str) -> Result<(), StoreError> {
        let email = email.to_owned();
        self.run(move |c| {
            let tx = c.transaction()?;
            if tx.execute("DELETE FROM users WHERE email = ?1", [&email])? == 0 {
                return Err(StoreError::NoSuchUser(email).into());
            }
            tx.execute("DELETE FROM oauth_sessions WHERE email = ?1", [&email])?;
            tx.execute("DELETE FROM oauth_consents WHERE email = ?1", [&email])?;
            tx.execute(
                "UPDATE oauth_tokens SET revoked_at = ?2 WHERE email = ?1 AND revoked_at IS NULL",
                params![email, crate::now()],
            )?;
            user_changed(&tx, &email)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn set_groups(&self, email: &str, groups: &[String]) -> Result<(), StoreError> {
        let json = serde_json::to_string(groups)
            .map_err(|e| StoreError::Corrupt(format!("groups: {e}")))?;
        let email = email.to_owned();
        self.run(move |c| {
            let tx = c.transaction()?;
            let old: Option<String> = tx
                .query_row(
                    "SELECT groups FROM identity_groups WHERE email = ?1",
                    [&email],
                    |r| r.get(0),
                )
                .optional()?;
            tx.execute(
                "INSERT INTO identity_groups (email, groups, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(email) DO UPDATE SET groups = excluded.groups, updated_at = excluded.updated_at",
                params![email, json, crate::now()],
            )?;
            if old.as_deref() != Some(json.as_str()) {
                user_changed(&tx, &email)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn groups(&self, email: &str) -> Result<Vec<String>, StoreError> {
        let email = email.to_owned();
        let json: Option<String> = self
            .run(move |c| {
                Ok(
                    c.prepare_cached("SELECT groups FROM identity_groups WHERE email = ?1")
                        .and_then(|mut stmt| stmt.query_row([email], |r| r.get(0)))
                        .optional()?,
                )
            })
            .await?;
        Ok(json
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default())
    }
}
