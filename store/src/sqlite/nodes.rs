//! The nodes of a cluster, their agents' sessions and the MCP sessions'
//! holders (a single relay on SQLite registers itself alone).

use rusqlite::{params, OptionalExtension};

use super::SqliteStore;
use crate::nodes::{AgentSession, Node, Nodes, SessionHolder};
use crate::StoreError;

fn row_to_node(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Node> {
    Ok(Node {
        id: r.get(at)?,
        agent_address: r.get(at + 1)?,
        peer_address: r.get(at + 2)?,
        started_at_ms: r.get(at + 3)?,
        heartbeat_at_ms: r.get(at + 4)?,
    })
}

#[async_trait::async_trait]
impl Nodes for SqliteStore {
    async fn register_node(
        &self,
        id: &str,
        agent_address: &str,
        peer_address: &str,
    ) -> Result<(), StoreError> {
        let (id, agent, peer) = (
            id.to_owned(),
            agent_address.to_owned(),
            peer_address.to_owned(),
        );
        self.run(move |c| {
            let now = crate::now_ms();
            c.execute(
                "INSERT INTO nodes (id, agent_address, peer_address, started_at, heartbeat_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT(id) DO UPDATE SET agent_address = excluded.agent_address,
                     peer_address = excluded.peer_address, heartbeat_at = excluded.heartbeat_at",
                params![id, agent, peer, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn node_heartbeat(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            Ok(c.execute(
                "UPDATE nodes SET heartbeat_at = ?2 WHERE id = ?1",
                params![id, crate::now_ms()],
            )? > 0)
        })
        .await
    }

    async fn live_nodes(&self, stale_after_ms: i64) -> Result<Vec<Node>, StoreError> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, agent_address, peer_address, started_at, heartbeat_at FROM nodes
                 WHERE heartbeat_at >= ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([crate::now_ms() - stale_after_ms], |r| row_to_node(r, 0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn remove_node(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM agent_sessions WHERE node = ?1", [&id])?;
            let n = tx.execute("DELETE FROM nodes WHERE id = ?1", [&id])?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn forget_dead_nodes(&self, stale_after_ms: i64) -> Result<u64, StoreError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let before = crate::now_ms() - stale_after_ms;
            tx.execute(
                "DELETE FROM agent_sessions WHERE node IN (SELECT id FROM nodes WHERE heartbeat_at < ?1)",
                [before],
            )?;
            let n = tx.execute("DELETE FROM nodes WHERE heartbeat_at < ?1", [before])?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    async fn add_agent_session(
        &self,
        route: &str,
        node: &str,
        instance: &str,
    ) -> Result<(), StoreError> {
        let (route, node, instance) = (route.to_owned(), node.to_owned(), instance.to_owned());
        self.run(move |c| {
            c.execute(
                "INSERT INTO agent_sessions (route, node, instance, since) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(route, node, instance) DO UPDATE SET since = excluded.since",
                params![route, node, instance, crate::now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    async fn remove_agent_session(
        &self,
        route: &str,
        node: &str,
        instance: &str,
    ) -> Result<(), StoreError> {
        let (route, node, instance) = (route.to_owned(), node.to_owned(), instance.to_owned());
        self.run(move |c| {
            c.execute(
                "DELETE FROM agent_sessions WHERE route = ?1 AND node = ?2 AND instance = ?3",
                params![route, node, instance],
            )?;
            Ok(())
        })
        .await
    }

    async fn agent_sessions(
        &self,
        route: &str,
        stale_after_ms: i64,
    ) -> Result<Vec<AgentSession>, StoreError> {
        let route = route.to_owned();
        self.run(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT s.route, s.instance,
                        n.id, n.agent_address, n.peer_address, n.started_at, n.heartbeat_at
                 FROM agent_sessions s JOIN nodes n ON n.id = s.node
                 WHERE s.route = ?1 AND n.heartbeat_at >= ?2
                 ORDER BY n.id, s.instance",
            )?;
            let rows = stmt.query_map(params![route, crate::now_ms() - stale_after_ms], |r| {
                Ok(AgentSession {
                    route: r.get(0)?,
                    instance: r.get(1)?,
                    node: row_to_node(r, 2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn add_mcp_session(
        &self,
        id: &str,
        route: &str,
        instance: &str,
    ) -> Result<(), StoreError> {
        let (id, route, instance) = (id.to_owned(), route.to_owned(), instance.to_owned());
        self.run(move |c| {
            c.execute(
                "INSERT INTO mcp_sessions (id, route, instance, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET route = excluded.route,
                     instance = excluded.instance, at = excluded.at",
                params![id, route, instance, crate::now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    async fn mcp_session(&self, id: &str) -> Result<Option<SessionHolder>, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT route, instance FROM mcp_sessions WHERE id = ?1",
                [id],
                |r| {
                    Ok(SessionHolder {
                        route: r.get(0)?,
                        instance: r.get(1)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn remove_mcp_session(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            c.execute("DELETE FROM mcp_sessions WHERE id = ?1", [id])?;
            Ok(())
        })
        .await
    }

    async fn prune_mcp_sessions(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.run(move |c| {
            Ok(c.execute("DELETE FROM mcp_sessions WHERE at < ?1", [before_ms])? as u64)
        })
        .await
    }
}
