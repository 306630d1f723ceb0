//! The groups an upstream identity provider gave for an email at its latest
//! sign-in through it (`relay serve --oidc-*`). The gateway reads them on
//! every request of an OAuth token of that email: they become the policy's
//! `principal in Group::"…"` and the audit event's `groups`. A later sign-in
//! replaces them, so a group removed at the provider is gone here once the
//! person signs in again; local accounts have none.

use rusqlite::{params, OptionalExtension};

use crate::error::RelayError;
use crate::store::{now, Store};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS identity_groups (
    email      TEXT PRIMARY KEY,
    groups     TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
";

impl Store {
    /// Records the groups the provider gave for `email`.
    pub fn set_groups(&self, email: &str, groups: &[String]) -> Result<(), RelayError> {
        let json = serde_json::to_string(groups)
            .map_err(|e| RelayError::Config(format!("groups: {e}")))?;
        self.conn().execute(
            "INSERT INTO identity_groups (email, groups, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(email) DO UPDATE SET groups = excluded.groups, updated_at = excluded.updated_at",
            params![email, json, now()],
        )?;
        Ok(())
    }

    /// The groups last recorded for `email` (none if never).
    pub fn groups(&self, email: &str) -> Result<Vec<String>, RelayError> {
        let json: Option<String> = self
            .conn()
            .query_row(
                "SELECT groups FROM identity_groups WHERE email = ?1",
                [email],
                |r| r.get(0),
            )
            .optional()?;
        Ok(json
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_sign_in_tells_the_groups() {
        let dir = std::env::temp_dir().join(format!("dbr-groups-{}", crate::token::random_hex(6)));
        let store = Store::open(&dir).expect("open");
        assert!(store.groups("a@x.org").expect("get").is_empty());
        store
            .set_groups("a@x.org", &["data".into(), "ops".into()])
            .expect("set");
        assert_eq!(store.groups("a@x.org").expect("get"), vec!["data", "ops"]);
        store.set_groups("a@x.org", &["ops".into()]).expect("set");
        assert_eq!(store.groups("a@x.org").expect("get"), vec!["ops"]);
        assert!(store.groups("b@x.org").expect("get").is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
