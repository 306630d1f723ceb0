//! Grants of routes.

use rusqlite::{params, OptionalExtension};

use super::{changed, SqliteStore};
use crate::changes::Change;
use crate::grants::{GrantRecord, Grants, NewGrant};
use crate::token;
use crate::StoreError;

const COLUMNS: &str =
    "id, route, grantee, tools, read_only, created_by, created_at, expires_at, resources, prompts";

/// Column `at`, a JSON list of strings.
fn json_list(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Vec<String>> {
    let json: String = r.get(at)?;
    serde_json::from_str(&json).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(at, rusqlite::types::Type::Text, e.into())
    })
}

fn row_to_grant(r: &rusqlite::Row<'_>) -> rusqlite::Result<GrantRecord> {
    let tools: Option<String> = r.get(3)?;
    let tools = match tools {
        None => None,
        Some(json) => Some(serde_json::from_str(&json).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into())
        })?),
    };
    let resources = json_list(r, 8)?;
    let prompts = json_list(r, 9)?;
    Ok(GrantRecord {
        id: r.get(0)?,
        route: r.get(1)?,
        grantee: r.get(2)?,
        tools,
        resources,
        prompts,
        read_only: r.get(4)?,
        created_by: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
    })
}

fn json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait::async_trait]
impl Grants for SqliteStore {
    async fn create_grant(&self, grant: &NewGrant<'_>) -> Result<GrantRecord, StoreError> {
        let tools = grant.tools.map(json).transpose()?;
        let (resources, prompts) = (json(&grant.resources)?, json(&grant.prompts)?);
        let record = GrantRecord {
            id: token::random_hex(6),
            route: grant.route.to_owned(),
            grantee: grant.grantee.to_owned(),
            tools: grant.tools.map(<[String]>::to_vec),
            resources: grant.resources.to_vec(),
            prompts: grant.prompts.to_vec(),
            read_only: grant.read_only,
            created_by: grant.created_by.to_owned(),
            created_at: crate::now(),
            expires_at: grant.expires_at,
        };
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO route_grants (id, route, grantee, tools, read_only, created_by,
                                           created_at, expires_at, resources, prompts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    record.id,
                    record.route,
                    record.grantee,
                    tools,
                    record.read_only,
                    record.created_by,
                    record.created_at,
                    record.expires_at,
                    resources,
                    prompts
                ],
            )?;
            changed(
                &tx,
                &Change::Grants {
                    route: record.route.clone(),
                },
            )?;
            tx.commit()?;
            Ok(record)
        })
        .await
    }

    async fn route_grants(&self, route: &str) -> Result<Vec<GrantRecord>, StoreError> {
        let route = route.to_owned();
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM route_grants
                 WHERE route = ?1 AND revoked_at IS NULL
                 ORDER BY rowid"
            ))?;
            let rows = stmt.query_map(params![route], row_to_grant)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn owner_grants(
        &self,
        owner: &str,
        route: Option<&str>,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        let (owner, route) = (owner.to_owned(), route.map(str::to_owned));
        self.run(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {} FROM route_grants g JOIN routes r ON r.name = g.route
                 WHERE r.owner = ?1 AND (?2 IS NULL OR g.route = ?2) AND g.revoked_at IS NULL
                 ORDER BY g.route, g.rowid",
                COLUMNS
                    .split(", ")
                    .map(|c| format!("g.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))?;
            let rows = stmt.query_map(params![owner, route], row_to_grant)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            Ok(c.query_row(
                &format!("SELECT {COLUMNS} FROM route_grants WHERE id = ?1 AND revoked_at IS NULL"),
                [id],
                row_to_grant,
            )
            .optional()?)
        })
        .await
    }

    async fn revoke_grant(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            let tx = c.transaction()?;
            let route: Option<String> = tx
                .query_row(
                    "UPDATE route_grants SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL
                     RETURNING route",
                    params![id, crate::now()],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(route) = &route {
                changed(
                    &tx,
                    &Change::Grants {
                        route: route.clone(),
                    },
                )?;
            }
            tx.commit()?;
            Ok(route.is_some())
        })
        .await
    }
}
