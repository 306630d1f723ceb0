//! Grants of routes.

use tokio_postgres::Row;

use super::{col, pg, PostgresStore};
use crate::changes::Change;
use crate::grants::{GrantRecord, Grants, NewGrant};
use crate::token;
use crate::StoreError;

const COLUMNS: &str =
    "g.id, g.route, g.grantee, g.tools, g.read_only, g.created_by, g.created_at, g.expires_at, g.resources, g.prompts";

fn json_list(r: &Row, at: usize) -> Result<Vec<String>, StoreError> {
    let json: String = col(r, at)?;
    serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("column {at}: {e}")))
}

fn row_to_grant(r: &Row) -> Result<GrantRecord, StoreError> {
    let tools: Option<String> = col(r, 3)?;
    let tools = match tools {
        None => None,
        Some(json) => Some(
            serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("tools: {e}")))?,
        ),
    };
    Ok(GrantRecord {
        id: col(r, 0)?,
        route: col(r, 1)?,
        grantee: col(r, 2)?,
        tools,
        resources: json_list(r, 8)?,
        prompts: json_list(r, 9)?,
        read_only: col(r, 4)?,
        created_by: col(r, 5)?,
        created_at: col(r, 6)?,
        expires_at: col(r, 7)?,
    })
}

fn json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait::async_trait]
impl Grants for PostgresStore {
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
        let mut conn = self.conn().await?;
        let mut w = self.begin(&mut conn).await?;
        w.tx.execute(
            "INSERT INTO route_grants (id, route, grantee, tools, read_only, created_by,
                                       created_at, expires_at, resources, prompts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &record.id,
                &record.route,
                &record.grantee,
                &tools,
                &record.read_only,
                &record.created_by,
                &record.created_at,
                &record.expires_at,
                &resources,
                &prompts,
            ],
        )
        .await
        .map_err(pg)?;
        w.changed(Change::Grants {
            route: record.route.clone(),
        });
        self.commit(w).await?;
        Ok(record)
    }

    async fn route_grants(&self, route: &str) -> Result<Vec<GrantRecord>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM route_grants g
                 WHERE g.route = $1 AND g.revoked_at IS NULL ORDER BY g.n"
            ))
            .await
            .map_err(pg)?;
        conn.query(&stmt, &[&route])
            .await
            .map_err(pg)?
            .iter()
            .map(row_to_grant)
            .collect()
    }

    async fn owner_grants(
        &self,
        owner: &str,
        route: Option<&str>,
    ) -> Result<Vec<GrantRecord>, StoreError> {
        let conn = self.conn().await?;
        conn.query(
            &format!(
                "SELECT {COLUMNS} FROM route_grants g JOIN routes r ON r.name = g.route
                 WHERE r.owner = $1 AND ($2::text IS NULL OR g.route = $2)
                   AND g.revoked_at IS NULL
                 ORDER BY g.route, g.n"
            ),
            &[&owner, &route],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(row_to_grant)
        .collect()
    }

    async fn grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError> {
        let conn = self.conn().await?;
        conn.query_opt(
            &format!(
                "SELECT {COLUMNS} FROM route_grants g WHERE g.id = $1 AND g.revoked_at IS NULL"
            ),
            &[&id],
        )
        .await
        .map_err(pg)?
        .as_ref()
        .map(row_to_grant)
        .transpose()
    }

    async fn revoke_grant(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let mut w = self.begin(&mut conn).await?;
        let route =
            w.tx.query_opt(
                "UPDATE route_grants SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL
                 RETURNING route",
                &[&id, &crate::now()],
            )
            .await
            .map_err(pg)?
            .as_ref()
            .map(|r| col::<String>(r, 0))
            .transpose()?;
        if let Some(route) = &route {
            w.changed(Change::Grants {
                route: route.clone(),
            });
        }
        self.commit(w).await?;
        Ok(route.is_some())
    }
}
