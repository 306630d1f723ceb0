//! The policy engines of a running relay: the organisation's policy (from
//! `relay serve --policy FILE`) combined with each route owner's (sent by the
//! agent in its hello: compiled from `agent connect --allow/--tools/--read-only`
//! or read from `agent connect --policy FILE`).
//!
//! A route offered without a policy gets the default: only its owner.
//! Engines are built once per distinct owner policy text and cached, since
//! compiling Cedar text costs far more than a decision, and a reconnecting
//! agent sends the same text again.
//!
//! Grants (`agent share`) add permits to the owner's policy. They are read
//! from the store on every request ([`Policies::with_live_grants`]), so the
//! engine with a route's grants is cached by the owner's text and the grants'
//! (a changed grant is a new key; the route's entries are dropped when its
//! grants change), and an expired grant permits nothing at decision time.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::error::RelayError;
use crate::grant_store::GrantRecord;
use crate::store::{now, Store};
use policy::{Engine, Grant, Policy};
use protocol::RouteGrant;

/// Most distinct owner policies kept compiled; the cache is emptied when full
/// (engines in use stay alive through their sessions).
const CACHE_ENTRIES: usize = 256;

/// The relay's policy engines.
pub struct Policies {
    org: Option<Policy>,
    /// Owner-only, under the organisation's policy.
    default: Arc<Engine>,
    engines: Mutex<HashMap<String, Arc<Engine>>>,
    /// Owner policies with grants, by owner text and grants text: the route
    /// and the engine.
    granted: Mutex<HashMap<String, (String, Arc<Engine>)>>,
}

impl Policies {
    /// Loads the organisation's policy, if any. A policy that does not
    /// validate stops the relay with the file, line and problem.
    pub fn load(org: Option<&Path>) -> Result<Policies, RelayError> {
        let org = match org {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| RelayError::File {
                    what: "cannot read the policy",
                    path: path.to_path_buf(),
                    source,
                })?;
                let name = path.display().to_string();
                Some(
                    Policy::from_cedar_text(&text, &name)
                        .map_err(|e| RelayError::Config(e.to_string()))?,
                )
            }
        };
        let owner_only = Policy::from_flags(&[], None, false)
            .map_err(|e| RelayError::Config(format!("the default owner policy: {e}")))?;
        Ok(Policies {
            default: Arc::new(Engine::new(owner_only, org.clone())),
            org,
            engines: Mutex::new(HashMap::new()),
            granted: Mutex::new(HashMap::new()),
        })
    }

    /// The engine for a route whose owner sent `owner_policy` (Cedar text), or
    /// the owner-only default without one. The error is for the agent: which
    /// line of its policy is wrong, and why.
    pub fn for_route(
        &self,
        route: &str,
        owner_policy: Option<&str>,
    ) -> Result<Arc<Engine>, String> {
        let Some(text) = owner_policy else {
            return Ok(self.default.clone());
        };
        let mut engines = self.engines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = engines.get(text) {
            return Ok(e.clone());
        }
        let policy = Policy::from_cedar_text(text, &format!("route {route}'s owner policy"))
            .map_err(|e| format!("{e}"))?;
        let engine = Arc::new(Engine::new(policy, self.org.clone()));
        if engines.len() >= CACHE_ENTRIES {
            engines.clear();
        }
        engines.insert(text.to_owned(), engine.clone());
        Ok(engine)
    }

    /// The engine that decides a request on `route` now: `base` (the serving
    /// agent's) with the route's live grants added, and those grants as the
    /// agent is told them. Without grants, `base` itself.
    pub fn with_live_grants(
        &self,
        store: &Store,
        route: &str,
        base: &Arc<Engine>,
    ) -> Result<(Arc<Engine>, Vec<RouteGrant>), RelayError> {
        let records = store.live_grants(route, now())?;
        if records.is_empty() {
            return Ok((base.clone(), Vec::new()));
        }
        let grants: Vec<Grant> = records
            .iter()
            .filter_map(|r| match r.to_policy() {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::error!(route, grant = r.id, error = %e, "unusable grant skipped");
                    None
                }
            })
            .collect();
        let wire = records.iter().map(GrantRecord::to_wire).collect();
        Ok((self.granted(route, base, &grants), wire))
    }

    fn granted(&self, route: &str, base: &Arc<Engine>, grants: &[Grant]) -> Arc<Engine> {
        let mut key = base.owner().cedar_text().to_owned();
        key.push('\0');
        for g in grants {
            key.push_str(&g.cedar_text());
        }
        let mut granted = self.granted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, e)) = granted.get(&key) {
            return e.clone();
        }
        let engine = match base.owner().with_grants(grants) {
            Ok(p) => Arc::new(Engine::new(p, self.org.clone())),
            Err(e) => {
                // E.g. the owner's policy file uses a `grant-…` id: the
                // grants cannot be added, and permit nothing.
                tracing::error!(route, error = %e, "the route's grants do not combine with its owner's policy; they are ignored");
                return base.clone();
            }
        };
        if granted.len() >= CACHE_ENTRIES {
            granted.clear();
        }
        granted.insert(key, (route.to_owned(), engine.clone()));
        engine
    }

    /// Drops the cached engines of `route` (its grants changed).
    pub fn forget_grants(&self, route: &str) {
        self.granted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (r, _)| r != route);
    }
}
