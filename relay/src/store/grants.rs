//! The grants side of the state store: what route owners shared with peers
//! (`agent share`). The gateway asks for a route's live grants on every
//! request, so a revoked or expired grant ends access on the next one.
//!
//! Grants change rarely, so a route's grants are read from the store once
//! and kept ([`GrantCache`]); expiry is checked at each request against the
//! kept records. Every write through this relay's store (create, revoke, a
//! route released or claimed) forgets the route's entry once it has
//! committed, so the next request reads it again; a write by another
//! process reaches the relay through the store's change feed within a
//! second (and the route it released is refused before its grants are read
//! anyway: no owner).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use ::store::grants::{GrantRecord, NewGrant};

/// A stored grant as the policy engine and the agent take it.
pub trait GrantConvert {
    /// The grant as the policy engine takes it.
    fn to_policy(&self) -> Result<policy::Grant, policy::PolicyError>;
    /// The grant as the agent is told it.
    fn to_wire(&self) -> protocol::RouteGrant;
}

impl GrantConvert for GrantRecord {
    fn to_policy(&self) -> Result<policy::Grant, policy::PolicyError> {
        let grant = policy::Grant {
            id: self.id.clone(),
            grantee: policy::Grantee::parse(&self.grantee)?,
            tools: self.tools.clone(),
            resources: self.resources.clone(),
            prompts: self.prompts.clone(),
            read_only: self.read_only,
            expires_at: self.expires_at,
        };
        grant.check()?;
        Ok(grant)
    }

    fn to_wire(&self) -> protocol::RouteGrant {
        protocol::RouteGrant {
            id: self.id.clone(),
            with: self.grantee.clone(),
            tools: self.tools.clone(),
            read_only: self.read_only,
            expires_at: self.expires_at,
            resources: self.resources.clone(),
            prompts: self.prompts.clone(),
        }
    }
}

/// Most routes whose grants are kept; emptied when full.
const GRANT_CACHE_ROUTES: usize = 4096;

/// Each route's grants that are not revoked (expired ones too: expiry is
/// checked per request), as last read from the store.
#[derive(Default)]
pub struct GrantCache {
    routes: Mutex<HashMap<String, Arc<[GrantRecord]>>>,
    /// Bumped by every forget: an entry read before it is not kept.
    generation: AtomicU64,
}

impl GrantCache {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<[GrantRecord]>>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets what is kept for `route` (its grants changed).
    pub fn forget(&self, route: &str) {
        let mut routes = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        routes.remove(route);
    }

    /// Forgets everything (changes may have been missed).
    pub fn forget_all(&self) {
        let mut routes = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        routes.clear();
    }

    /// The generation to give [`GrantCache::keep`] for a read that starts now.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// What is kept for `route`.
    pub fn get(&self, route: &str) -> Option<Arc<[GrantRecord]>> {
        self.lock().get(route).cloned()
    }

    /// Keeps `grants` read for `route`, unless anything was forgotten since
    /// `generation` (the read may predate a write).
    pub fn keep(&self, route: &str, grants: Arc<[GrantRecord]>, generation: u64) {
        let mut routes = self.lock();
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if routes.len() >= GRANT_CACHE_ROUTES {
            routes.clear();
        }
        routes.insert(route.to_owned(), grants);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::token;
    use crate::store::{now, Store};

    #[tokio::test]
    async fn grants_live_until_revoked_or_expired_and_go_with_their_route() {
        let dir = std::env::temp_dir().join(format!("dbr-grants-{}", token::random_hex(6)));
        let s = Store::open(&dir).expect("open");
        s.claim_route("db", "a@x").await.expect("claim");
        let tools = vec!["read_query".to_owned()];
        let memo = vec!["memo://*".to_owned()];
        let g = s
            .create_grant(&NewGrant {
                route: "db",
                grantee: "b@x",
                tools: Some(&tools),
                resources: &[],
                prompts: &[],
                read_only: true,
                created_by: "a@x",
                expires_at: Some(now() + 60),
            })
            .await
            .expect("create");
        let short = s
            .create_grant(&NewGrant {
                route: "db",
                grantee: "@y",
                tools: None,
                resources: &memo,
                prompts: &[],
                read_only: false,
                created_by: "a@x",
                expires_at: Some(now() + 5),
            })
            .await
            .expect("create");
        let t = now();
        assert_eq!(
            s.live_grants("db", t).await.expect("live"),
            [g.clone(), short.clone()]
        );
        // Expired at decision time, still listed for its owner.
        assert_eq!(
            s.live_grants("db", t + 10).await.expect("live"),
            std::slice::from_ref(&g)
        );
        assert!(s.revoke_grant(&g.id).await.expect("revoke"));
        assert!(!s.revoke_grant(&g.id).await.expect("revoke again"));
        assert_eq!(s.live_grants("db", t).await.expect("live"), [short]);
        // A released route's grants do not pass to its next owner.
        assert!(s.release_route("db").await.expect("release"));
        assert!(s.live_grants("db", t).await.expect("live").is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
