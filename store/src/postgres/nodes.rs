//! The nodes of a cluster, their agents' sessions and the MCP sessions'
//! holders.

use tokio_postgres::Row;

use super::{col, pg, PostgresStore};
use crate::nodes::{AgentSession, Node, Nodes, SessionHolder};
use crate::StoreError;

fn row_to_node(r: &Row, at: usize) -> Result<Node, StoreError> {
    Ok(Node {
        id: col(r, at)?,
        agent_address: col(r, at + 1)?,
        peer_address: col(r, at + 2)?,
        started_at_ms: col(r, at + 3)?,
        heartbeat_at_ms: col(r, at + 4)?,
    })
}

#[async_trait::async_trait]
impl Nodes for PostgresStore {
    async fn register_node(
        &self,
        id: &str,
        agent_address: &str,
        peer_address: &str,
    ) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO nodes (id, agent_address, peer_address, started_at, heartbeat_at)
             VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (id) DO UPDATE SET agent_address = excluded.agent_address,
                 peer_address = excluded.peer_address, heartbeat_at = excluded.heartbeat_at",
            &[&id, &agent_address, &peer_address, &crate::now_ms()],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn node_heartbeat(&self, id: &str) -> Result<bool, StoreError> {
        let conn = self.conn().await?;
        let n = conn
            .execute(
                "UPDATE nodes SET heartbeat_at = $2 WHERE id = $1",
                &[&id, &crate::now_ms()],
            )
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    async fn live_nodes(&self, stale_after_ms: i64) -> Result<Vec<Node>, StoreError> {
        let conn = self.conn().await?;
        conn.query(
            "SELECT id, agent_address, peer_address, started_at, heartbeat_at FROM nodes
             WHERE heartbeat_at >= $1 ORDER BY id",
            &[&(crate::now_ms() - stale_after_ms)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| row_to_node(r, 0))
        .collect()
    }

    async fn remove_node(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(pg)?;
        tx.execute("DELETE FROM agent_sessions WHERE node = $1", &[&id])
            .await
            .map_err(pg)?;
        let n = tx
            .execute("DELETE FROM nodes WHERE id = $1", &[&id])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(n > 0)
    }

    async fn forget_dead_nodes(&self, stale_after_ms: i64) -> Result<u64, StoreError> {
        let before = crate::now_ms() - stale_after_ms;
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(pg)?;
        tx.execute(
            "DELETE FROM agent_sessions WHERE node IN (SELECT id FROM nodes WHERE heartbeat_at < $1)",
            &[&before],
        )
        .await
        .map_err(pg)?;
        let n = tx
            .execute("DELETE FROM nodes WHERE heartbeat_at < $1", &[&before])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(n)
    }

    async fn add_agent_session(
        &self,
        route: &str,
        node: &str,
        instance: &str,
    ) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO agent_sessions (route, node, instance, since) VALUES ($1, $2, $3, $4)
             ON CONFLICT (route, node, instance) DO UPDATE SET since = excluded.since",
            &[&route, &node, &instance, &crate::now_ms()],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn remove_agent_session(
        &self,
        route: &str,
        node: &str,
        instance: &str,
    ) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.execute(
            "DELETE FROM agent_sessions WHERE route = $1 AND node = $2 AND instance = $3",
            &[&route, &node, &instance],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn agent_sessions(
        &self,
        route: &str,
        stale_after_ms: i64,
    ) -> Result<Vec<AgentSession>, StoreError> {
        let conn = self.conn().await?;
        conn.query(
            "SELECT s.route, s.instance,
                    n.id, n.agent_address, n.peer_address, n.started_at, n.heartbeat_at
             FROM agent_sessions s JOIN nodes n ON n.id = s.node
             WHERE s.route = $1 AND n.heartbeat_at >= $2
             ORDER BY n.id, s.instance",
            &[&route, &(crate::now_ms() - stale_after_ms)],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|r| {
            Ok(AgentSession {
                route: col(r, 0)?,
                instance: col(r, 1)?,
                node: row_to_node(r, 2)?,
            })
        })
        .collect()
    }

    async fn add_mcp_session(
        &self,
        id: &str,
        route: &str,
        instance: &str,
    ) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO mcp_sessions (id, route, instance, at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET route = excluded.route,
                 instance = excluded.instance, at = excluded.at",
            &[&id, &route, &instance, &crate::now_ms()],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn mcp_session(&self, id: &str) -> Result<Option<SessionHolder>, StoreError> {
        let conn = self.conn().await?;
        conn.query_opt(
            "SELECT route, instance FROM mcp_sessions WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(pg)?
        .map(|r| {
            Ok(SessionHolder {
                route: col(&r, 0)?,
                instance: col(&r, 1)?,
            })
        })
        .transpose()
    }

    async fn remove_mcp_session(&self, id: &str) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.execute("DELETE FROM mcp_sessions WHERE id = $1", &[&id])
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn prune_mcp_sessions(&self, before_ms: i64) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        conn.execute("DELETE FROM mcp_sessions WHERE at < $1", &[&before_ms])
            .await
            .map_err(pg)
    }
}
