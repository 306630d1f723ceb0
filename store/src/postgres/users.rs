//! Local accounts and identity groups.

use super::{col, pg, PostgresStore};
use crate::changes::Change;
use crate::users::Users;
use crate::StoreError;

fn user_changed(email: &str) -> Change {
    Change::User {
        email: email.to_owned(),
    }
}

#[async_trait::async_trait]
impl Users for PostgresStore {
    async fn add_user(&self, email: &str, password_hash: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let mut w = self.begin(&mut conn).await?;
        let n =
            w.tx.execute(
                "INSERT INTO users (email, password_hash, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (email) DO NOTHING",
                &[&email, &password_hash, &crate::now()],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Err(StoreError::UserExists(email.to_owned()));
        }
        w.changed(user_changed(email));
        self.commit(w).await
    }

    async fn user_password_hash(&self, email: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn().await?;
        conn.query_opt(
            "SELECT password_hash FROM users WHERE email = $1",
            &[&email],
        )
        .await
        .map_err(pg)?
        .as_ref()
        .map(|r| col(r, 0))
        .transpose()
    }

    async fn list_users(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let conn = self.conn().await?;
        conn.query("SELECT email, created_at FROM users ORDER BY email", &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| Ok((col(r, 0)?, col(r, 1)?)))
            .collect()
    }

    async fn remove_user(&self, email: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let mut w = self.begin(&mut conn).await?;
        if w.tx
            .execute("DELETE FROM users WHERE email = $1", &[&email])
            .await
            .map_err(pg)?
            == 0
        {
            return Err(StoreError::NoSuchUser(email.to_owned()));
        }
        w.tx.execute("DELETE FROM oauth_sessions WHERE email = $1", &[&email])
            .await
            .map_err(pg)?;
        w.tx.execute("DELETE FROM oauth_consents WHERE email = $1", &[&email])
            .await
            .map_err(pg)?;
        w.tx.execute(
            "UPDATE oauth_tokens SET revoked_at = $2 WHERE email = $1 AND revoked_at IS NULL",
            &[&email, &crate::now()],
        )
        .await
        .map_err(pg)?;
        w.changed(user_changed(email));
        self.commit(w).await
    }

    async fn set_groups(&self, email: &str, groups: &[String]) -> Result<(), StoreError> {
        let json = serde_json::to_string(groups)
            .map_err(|e| StoreError::Corrupt(format!("groups: {e}")))?;
        let mut conn = self.conn().await?;
        let mut w = self.begin(&mut conn).await?;
        // The old value, as the upsert replaced it (NULL: none before).
        let old: Option<String> = col(
            &w.tx
                .query_one(
                    "WITH old AS (SELECT groups FROM identity_groups WHERE email = $1 FOR UPDATE),
                          new AS (INSERT INTO identity_groups (email, groups, updated_at)
                                  VALUES ($1, $2, $3)
                                  ON CONFLICT (email) DO UPDATE
                                  SET groups = excluded.groups, updated_at = excluded.updated_at)
                     SELECT (SELECT groups FROM old)",
                    &[&email, &json, &crate::now()],
                )
                .await
                .map_err(pg)?,
            0,
        )?;
        if old.as_deref() != Some(json.as_str()) {
            w.changed(user_changed(email));
        }
        self.commit(w).await
    }

    async fn groups(&self, email: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn().await?;
        let json: Option<String> = conn
            .query_opt(
                "SELECT groups FROM identity_groups WHERE email = $1",
                &[&email],
            )
            .await
            .map_err(pg)?
            .as_ref()
            .map(|r| col(r, 0))
            .transpose()?;
        Ok(json
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default())
    }
}
