//! The relay's state store: the `store` crate's backend (SQLite, in the
//! state directory), behind the lookups the request path makes.
//!
//! The lookups of every request (tokens, route owners, grants, pending tool
//! changes, groups) are served from memory ([`crate::store::hot_cache`],
//! [`crate::store::grants::GrantCache`]) while the backend proves them fresh
//! ([`::store::Changes::fresh`]: for SQLite, `PRAGMA data_version` has not
//! moved, or the changes since were read); what changed, by this relay or
//! another process (`relay token revoke` on the same state directory), is
//! forgotten before the next request reads it. Every other call goes to the
//! backend as it is (`Store` dereferences to `dyn store::Store`).

pub mod backend;
pub mod grants;
pub mod hot_cache;
pub mod oauth;
pub mod proof;
pub mod token;

use std::collections::HashMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use ::store::{now, RouteClaim, StoreError, TokenRecord, TokenRejection};

use ::store::Change;

use crate::error::RelayError;
use crate::store::grants::{GrantCache, GrantRecord};
use crate::store::hot_cache::HotCache;
use crate::store::oauth::{OAuthToken, OAuthTokenKind};
use crate::store::proof::Proof;

/// How often `last_used_at` is written for one token, at most.
const LAST_USED_RESOLUTION: i64 = 60;

/// How long a lookup of the request path may wait for a database on the
/// network (PostgreSQL); then the request is answered 503. A healthy
/// database answers in milliseconds; one cut off may never answer.
pub const REMOTE_READ_BOUND: Duration = Duration::from_millis(500);

/// How long a request whose caches cannot be proven fresh may wait, in all,
/// for the change feed's next read and then for its own reads. With the
/// feed's freshness bound (0.5 s), a node cut off from its database refuses
/// within 0.9 s of the cut.
pub const STALE_READ_BOUND: Duration = Duration::from_millis(400);

/// The embedded state store.
pub struct Store {
    backend: Arc<dyn ::store::Store>,
    path: PathBuf,
    last_used_written: Mutex<HashMap<String, i64>>,
    /// The grants of each route, read once (see [`crate::store::grants`]).
    grant_cache: Arc<GrantCache>,
    /// The other reads of the request path (see [`crate::store::hot_cache`]).
    hot: Arc<HotCache>,
    /// The backend is a database on the network (PostgreSQL): the request
    /// path bounds its reads ([`REMOTE_READ_BOUND`]), and a failed one is
    /// "unavailable" (503) rather than an internal error.
    remote: bool,
}

impl Deref for Store {
    type Target = dyn ::store::Store;

    fn deref(&self) -> &Self::Target {
        &*self.backend
    }
}

impl Store {
    /// Opens (creating if needed, migrating if older) the store in
    /// `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Store, RelayError> {
        let sqlite = ::store::sqlite::SqliteStore::open(state_dir)?;
        let path = sqlite.path().to_path_buf();
        Ok(Store::with_backend(Arc::new(sqlite), path))
    }

    /// The backend itself, for a task that needs only the database (no
    /// cache, no freshness proof): audit shipping, cluster ACME.
    pub fn backend(&self) -> Arc<dyn ::store::Store> {
        self.backend.clone()
    }

    /// The store over `backend`: what it changes, this relay's writes and
    /// others', is forgotten from the caches as the backend learns of it.
    pub fn with_backend(backend: Arc<dyn ::store::Store>, path: PathBuf) -> Store {
        let grant_cache = Arc::new(GrantCache::default());
        let hot = Arc::new(HotCache::default());
        // SQLite proves every change before the call; a remote backend only
        // those older than its bound.
        let remote = backend.freshness_bound() > Duration::ZERO;
        let (grants, kept) = (grant_cache.clone(), hot.clone());
        backend.on_change(Arc::new(move |change: &Change| {
            kept.forget(change);
            match change {
                Change::Grants { route } | Change::Route { name: route } => grants.forget(route),
                Change::Reset => grants.forget_all(),
                _ => {}
            }
        }));
        Store {
            backend,
            path,
            last_used_written: Mutex::new(HashMap::new()),
            grant_cache,
            hot,
            remote,
        }
    }

    /// The freshness proof of a request: taken once, when it arrives (see
    /// [`crate::store::proof`]). On a remote backend whose follower of the
    /// changes is late, waits for its next read (within
    /// [`STALE_READ_BOUND`]); if that does not come, the request's reads go
    /// to the database, and must be answered within what is left of
    /// [`STALE_READ_BOUND`].
    pub async fn prove(&self) -> Proof {
        if !self.remote {
            return Proof::new(self.backend.fresh());
        }
        let deadline = tokio::time::Instant::now() + STALE_READ_BOUND;
        if self.backend.fresh_within(STALE_READ_BOUND).await {
            Proof::new(true)
        } else {
            Proof::stale_until(deadline)
        }
    }

    /// Whether the backend is a database on the network (PostgreSQL).
    pub fn is_remote(&self) -> bool {
        self.remote
    }

    /// `read`, bounded on a remote backend by what `proof` leaves it
    /// ([`REMOTE_READ_BOUND`], or the rest of [`STALE_READ_BOUND`]).
    async fn bounded<T>(
        &self,
        read: impl std::future::Future<Output = Result<T, StoreError>>,
        proof: Proof,
    ) -> Result<T, StoreError> {
        if !self.remote {
            return read.await;
        }
        let bound = proof.read_bound();
        tokio::time::timeout(bound, read).await.unwrap_or_else(|_| {
            Err(StoreError::Backend(format!(
                "the database did not answer within {} ms",
                bound.as_millis()
            )))
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Looks up a presented token. On success, records its use (at most once a
    /// minute per token, so that verification stays a read).
    pub async fn verify(&self, presented: &str) -> Result<TokenRecord, TokenRejection> {
        self.verify_proven(presented, self.prove().await)
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "token lookup failed");
                Err(TokenRejection::Unknown)
            })
    }

    /// [`Store::verify`] under the request's `proof`; the outer error: the
    /// store could not be read.
    pub async fn verify_proven(
        &self,
        presented: &str,
        proof: Proof,
    ) -> Result<Result<TokenRecord, TokenRejection>, StoreError> {
        if token::claimed_kind(presented).is_none() {
            return Ok(Err(TokenRejection::Unknown));
        }
        let hash = token::hash(presented);
        let fresh = proof.fresh();
        let record = match self.hot.token(&hash).filter(|_| fresh) {
            Some(record) => record,
            None => {
                let generation = self.hot.generation();
                let Some(record) = self
                    .bounded(self.backend.token_by_secret(presented), proof)
                    .await?
                else {
                    return Ok(Err(TokenRejection::Unknown));
                };
                if fresh {
                    self.hot.keep_token(generation, hash, record.clone());
                }
                record
            }
        };
        let now = now();
        if let Err(rejection) = record.check(now) {
            return Ok(Err(rejection));
        }
        self.touch(&record.id, now);
        Ok(Ok(record))
    }

    fn touch(&self, id: &str, now: i64) {
        {
            let mut written = self
                .last_used_written
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match written.get(id) {
                Some(t) if now - t < LAST_USED_RESOLUTION => return,
                _ => {
                    written.insert(id.to_owned(), now);
                }
            }
        }
        // Off the request: the write waits for nobody.
        let (backend, id) = (self.backend.clone(), id.to_owned());
        let write = async move {
            if let Err(e) = backend.touch_token(&id, now).await {
                tracing::warn!(error = %e, token = id, "could not record token use");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(write);
            }
            Err(_) => futures::executor::block_on(write),
        }
    }

    /// Claims `name` for `owner`: the first owner to serve a route keeps it.
    pub async fn claim_route(&self, name: &str, owner: &str) -> Result<RouteClaim, RelayError> {
        self.claim_route_capped(name, owner, 0).await
    }

    /// [`Store::claim_route`], refusing a new name to an owner who already
    /// holds `max` routes (0: no cap). Counting and claiming are one
    /// transaction, so concurrent claims cannot pass the cap.
    pub async fn claim_route_capped(
        &self,
        name: &str,
        owner: &str,
        max: u32,
    ) -> Result<RouteClaim, RelayError> {
        Ok(self.backend.claim_route(name, owner, max).await?)
    }

    /// The grants of a route in force at `now` (not revoked, not expired),
    /// oldest first.
    pub async fn live_grants(&self, route: &str, now: i64) -> Result<Vec<GrantRecord>, RelayError> {
        self.live_grants_proven(route, now, self.prove().await)
            .await
    }

    /// [`Store::live_grants`] under the request's `proof`.
    pub async fn live_grants_proven(
        &self,
        route: &str,
        now: i64,
        proof: Proof,
    ) -> Result<Vec<GrantRecord>, RelayError> {
        let live = |all: &[GrantRecord]| {
            all.iter()
                .filter(|g| g.expires_at.is_none_or(|t| t > now))
                .cloned()
                .collect()
        };
        let fresh = proof.fresh();
        let generation = self.grant_cache.generation();
        if let Some(all) = self.grant_cache.get(route).filter(|_| fresh) {
            return Ok(live(&all));
        }
        let all: Arc<[GrantRecord]> = self
            .bounded(self.backend.route_grants(route), proof)
            .await?
            .into();
        let granted = live(&all);
        // Kept only if nothing was forgotten meanwhile (a write that
        // committed during the read).
        if fresh {
            self.grant_cache.keep(route, all, generation);
        }
        Ok(granted)
    }

    /// The owner of a claimed route.
    pub async fn route_owner(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.route_owner_proven(name, self.prove().await).await
    }

    /// [`Store::route_owner`] under the request's `proof`.
    pub async fn route_owner_proven(
        &self,
        name: &str,
        proof: Proof,
    ) -> Result<Option<String>, StoreError> {
        let fresh = proof.fresh();
        if let Some(owner) = self.hot.owner(name).filter(|_| fresh) {
            return Ok(owner);
        }
        let generation = self.hot.generation();
        let owner = self.bounded(self.backend.route_owner(name), proof).await?;
        if fresh {
            self.hot.keep_owner(generation, name, owner.clone());
        }
        Ok(owner)
    }

    /// Whether calls to a tool wait for the owner's approval of a change.
    pub async fn tool_change_pending(&self, route: &str, tool: &str) -> Result<bool, RelayError> {
        self.tool_change_pending_proven(route, tool, self.prove().await)
            .await
    }

    /// [`Store::tool_change_pending`] under the request's `proof`.
    pub async fn tool_change_pending_proven(
        &self,
        route: &str,
        tool: &str,
        proof: Proof,
    ) -> Result<bool, RelayError> {
        let fresh = proof.fresh();
        let pending = match self.hot.pending(route).filter(|_| fresh) {
            Some(pending) => pending,
            None => {
                let generation = self.hot.generation();
                let pending: Arc<[String]> = self
                    .bounded(self.backend.pending_tools(route), proof)
                    .await?
                    .into();
                if fresh {
                    self.hot.keep_pending(generation, route, pending.clone());
                }
                pending
            }
        };
        Ok(pending.iter().any(|t| t == tool))
    }

    /// The groups last recorded for `email` (none if never).
    pub async fn groups(&self, email: &str) -> Result<Vec<String>, StoreError> {
        self.groups_proven(email, self.prove().await).await
    }

    /// [`Store::groups`] under the request's `proof`.
    pub async fn groups_proven(
        &self,
        email: &str,
        proof: Proof,
    ) -> Result<Vec<String>, StoreError> {
        let fresh = proof.fresh();
        if let Some(groups) = self.hot.groups(email).filter(|_| fresh) {
            return Ok(groups.to_vec());
        }
        let generation = self.hot.generation();
        let groups = self.bounded(self.backend.groups(email), proof).await?;
        if fresh {
            self.hot
                .keep_groups(generation, email, groups.clone().into());
        }
        Ok(groups)
    }

    /// Checks a presented access token: known, an access token, live.
    pub async fn verify_access(&self, presented: &str) -> Result<OAuthToken, TokenRejection> {
        self.verify_access_proven(presented, self.prove().await)
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "OAuth token lookup failed");
                Err(TokenRejection::Unknown)
            })
    }

    /// [`Store::verify_access`] under the request's `proof`; the outer
    /// error: the store could not be read.
    pub async fn verify_access_proven(
        &self,
        presented: &str,
        proof: Proof,
    ) -> Result<Result<OAuthToken, TokenRejection>, StoreError> {
        let hash = token::hash(presented);
        let fresh = proof.fresh();
        let record = match self.hot.access(&hash).filter(|_| fresh) {
            Some(record) => record,
            None => {
                let generation = self.hot.generation();
                let Some(record) = self
                    .bounded(self.backend.oauth_token(presented), proof)
                    .await?
                    .filter(|t| t.kind == OAuthTokenKind::Access)
                else {
                    return Ok(Err(TokenRejection::Unknown));
                };
                if fresh {
                    self.hot.keep_access(generation, hash, record.clone());
                }
                record
            }
        };
        Ok(record.check(now()).map(|()| record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::token::TokenKind;

    fn store() -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!("dbr-store-{}", token::random_hex(6)));
        (Store::open(&dir).expect("open"), dir)
    }

    #[tokio::test]
    async fn verification_checks_the_prefix_and_the_state() {
        let (s, dir) = store();
        let (rec, secret) = s
            .create_token(TokenKind::Client, "a@x", "cli", None)
            .await
            .expect("create");
        assert_eq!(s.verify(secret.expose()).await.expect("valid").id, rec.id);
        assert_eq!(s.verify("dbct_nope").await, Err(TokenRejection::Unknown));
        s.revoke_token(&rec.id).await.expect("revoke");
        assert_eq!(
            s.verify(secret.expose()).await,
            Err(TokenRejection::Revoked)
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
