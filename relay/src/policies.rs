//! The policy engines of a running relay: the organisation's policy (from
//! `relay serve --policy FILE`) combined with each route owner's (sent by the
//! agent in its hello: compiled from `agent connect --allow/--tools/--read-only`
//! or read from `agent connect --policy FILE`).
//!
//! A route offered without a policy gets the default: only its owner.
//! Owner policies are compiled once per distinct text and cached, since
//! compiling Cedar text costs far more than a decision, and a reconnecting
//! agent sends the same text again.
//!
//! The organisation's policy can be replaced while the relay runs
//! ([`Policies::reload`]): every [`RoutePolicy`] still in use (by a connected
//! agent's session or in the cache) gets a new engine under the new
//! organisation policy, so the next request is decided by it, while requests
//! already being decided finish with the engine they started with.
//!
//! Grants (`agent share`) add permits to the owner's policy. They are asked
//! of the store on every request ([`Policies::with_live_grants`]; it keeps
//! them until they change, see [`crate::store::grants`]), so the
//! policy with a route's grants is cached by the owner's text and the grants'
//! (a changed grant is a new key; the route's entries are dropped when its
//! grants change), and an expired grant permits nothing at decision time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;

use crate::error::RelayError;
use crate::store::grants::{GrantConvert, GrantRecord};
use crate::store::{now, Store};
use policy::{Engine, Grant, Policy};
use protocol::RouteGrant;

/// Most distinct owner policies kept compiled; the cache is emptied when full
/// (engines in use stay alive through their sessions).
const CACHE_ENTRIES: usize = 256;

/// One route owner's policy under the organisation's current one.
pub struct RoutePolicy {
    owner: Policy,
    engine: ArcSwap<Engine>,
}

impl RoutePolicy {
    fn new(owner: Policy, org: Option<Policy>) -> Arc<RoutePolicy> {
        Arc::new(RoutePolicy {
            engine: ArcSwap::from_pointee(Engine::new(owner.clone(), org)),
            owner,
        })
    }

    /// The engine deciding now (keep it for the whole request, so that one
    /// request is decided by one policy).
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.load_full()
    }

    fn rebuild(&self, org: Option<Policy>) {
        self.engine
            .store(Arc::new(Engine::new(self.owner.clone(), org)));
    }
}

struct Compiled {
    org: Option<Policy>,
    /// Owner policy text → its route policy.
    cache: HashMap<String, Arc<RoutePolicy>>,
    /// Every route policy handed out and maybe still in use.
    handed_out: Vec<Weak<RoutePolicy>>,
}

/// The relay's policy engines.
pub struct Policies {
    /// The organisation's policy file, if any (read again on reload).
    org_path: Option<PathBuf>,
    /// Owner-only, under the organisation's policy.
    default: Arc<RoutePolicy>,
    compiled: Mutex<Compiled>,
    /// Owner policies with grants, by owner text and grants text: the route
    /// and the policy.
    granted: Mutex<HashMap<String, (String, Arc<RoutePolicy>)>>,
}

impl Policies {
    /// Loads the organisation's policy, if any. A policy that does not
    /// validate stops the relay with the file, line and problem.
    pub fn load(org_path: Option<&Path>) -> Result<Policies, RelayError> {
        let org = org_path.map(read_org).transpose()?;
        let owner_only = Policy::from_flags(&[], None, false)
            .map_err(|e| RelayError::Config(format!("the default owner policy: {e}")))?;
        let default = RoutePolicy::new(owner_only, org.clone());
        Ok(Policies {
            org_path: org_path.map(Path::to_path_buf),
            compiled: Mutex::new(Compiled {
                org,
                cache: HashMap::new(),
                handed_out: vec![Arc::downgrade(&default)],
            }),
            default,
            granted: Mutex::new(HashMap::new()),
        })
    }

    /// The organisation's policy file (`None`: the relay has none).
    pub fn org_path(&self) -> Option<&Path> {
        self.org_path.as_deref()
    }

    /// Reads the organisation's policy file again and, if it validates, puts
    /// every route under it. A policy that does not validate is refused with
    /// the file, line and problem, and the current one stays. Returns how
    /// many policies (`@id`s) the new file holds.
    pub fn reload(&self) -> Result<usize, RelayError> {
        let Some(path) = &self.org_path else {
            return Ok(0);
        };
        let org = read_org(path)?;
        let count = org.ids().len();
        let mut compiled = self.lock();
        compiled.org = Some(org.clone());
        compiled.handed_out.retain(|w| w.strong_count() > 0);
        for policy in compiled.handed_out.iter().filter_map(Weak::upgrade) {
            policy.rebuild(Some(org.clone()));
        }
        Ok(count)
    }

    /// The policy of a route whose owner sent `owner_policy` (Cedar text),
    /// or the owner-only default without one. The error is for the agent:
    /// which line of its policy is wrong, and why.
    pub fn for_route(
        &self,
        route: &str,
        owner_policy: Option<&str>,
    ) -> Result<Arc<RoutePolicy>, String> {
        let Some(text) = owner_policy else {
            return Ok(self.default.clone());
        };
        let mut compiled = self.lock();
        if let Some(p) = compiled.cache.get(text) {
            return Ok(p.clone());
        }
        let owner = Policy::from_cedar_text(text, &format!("route {route}'s owner policy"))
            .map_err(|e| format!("{e}"))?;
        let policy = RoutePolicy::new(owner, compiled.org.clone());
        if compiled.cache.len() >= CACHE_ENTRIES {
            compiled.cache.clear();
        }
        compiled.cache.insert(text.to_owned(), policy.clone());
        compiled.handed_out.retain(|w| w.strong_count() > 0);
        compiled.handed_out.push(Arc::downgrade(&policy));
        Ok(policy)
    }

    /// The engine that decides a request on `route` now: `base` (the serving
    /// agent's) with the route's live grants added, and those grants as the
    /// agent is told them. Without grants, `base`'s own.
    pub async fn with_live_grants(
        &self,
        store: &Store,
        route: &str,
        base: &Arc<RoutePolicy>,
        proof: crate::store::proof::Proof,
    ) -> Result<(Arc<Engine>, Vec<RouteGrant>), RelayError> {
        let records = store.live_grants_proven(route, now(), proof).await?;
        if records.is_empty() {
            return Ok((base.engine(), Vec::new()));
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
        Ok((self.granted(route, base, &grants).engine(), wire))
    }

    /// `base`'s owner policy with `grants` added, under the organisation's
    /// policy; cached, and rebuilt like every other on a reload.
    fn granted(&self, route: &str, base: &Arc<RoutePolicy>, grants: &[Grant]) -> Arc<RoutePolicy> {
        let mut key = base.owner.cedar_text().to_owned();
        key.push('\0');
        for g in grants {
            key.push_str(&g.cedar_text());
        }
        let mut granted = self.granted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, p)) = granted.get(&key) {
            return p.clone();
        }
        let owner = match base.owner.with_grants(grants) {
            Ok(p) => p,
            Err(e) => {
                // E.g. the owner's policy file uses a `grant-…` id: the
                // grants cannot be added, and permit nothing.
                tracing::error!(route, error = %e, "the route's grants do not combine with its owner's policy; they are ignored");
                return base.clone();
            }
        };
        let policy = {
            let mut compiled = self.lock();
            let policy = RoutePolicy::new(owner, compiled.org.clone());
            compiled.handed_out.retain(|w| w.strong_count() > 0);
            compiled.handed_out.push(Arc::downgrade(&policy));
            policy
        };
        if granted.len() >= CACHE_ENTRIES {
            granted.clear();
        }
        granted.insert(key, (route.to_owned(), policy.clone()));
        policy
    }

    /// Drops the cached policies of `route` (its grants changed).
    pub fn forget_grants(&self, route: &str) {
        self.granted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (r, _)| r != route);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Compiled> {
        self.compiled.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn read_org(path: &Path) -> Result<Policy, RelayError> {
    let text = std::fs::read_to_string(path).map_err(|source| RelayError::File {
        what: "cannot read the policy",
        path: path.to_path_buf(),
        source,
    })?;
    Policy::from_cedar_text(&text, &path.display().to_string())
        .map_err(|e| RelayError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).expect("write policy");
    }

    fn org_ids(p: &RoutePolicy) -> Vec<String> {
        p.engine()
            .org()
            .map(|o| o.ids().to_vec())
            .unwrap_or_default()
    }

    #[test]
    fn a_reload_puts_routes_in_use_under_the_new_policy_and_a_broken_one_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("policies-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("org.cedar");
        write(
            &path,
            "@id(\"first\")\nforbid (principal, action, resource) when { context.has_sql };\n",
        );
        let policies = Policies::load(Some(&path)).expect("load");
        let owner = Policy::from_flags(&[], None, false)
            .expect("flags")
            .cedar_text()
            .to_owned();
        let route = policies.for_route("demo", Some(&owner)).expect("route");
        let default = policies.for_route("other", None).expect("default");
        assert_eq!(org_ids(&route), ["first"]);

        write(
            &path,
            "@id(\"second\")\nforbid (principal, action, resource) when { context.listing };\n",
        );
        assert_eq!(policies.reload().expect("reload"), 1);
        assert_eq!(org_ids(&route), ["second"]);
        assert_eq!(org_ids(&default), ["second"]);

        write(&path, "@id(\"third\")\nforbid (principal, action, resource)\nwhen { principal.emial == \"a\" };\n");
        let err = policies.reload().expect_err("broken policy refused");
        assert!(err.to_string().contains("org.cedar:3"), "{err}");
        assert_eq!(org_ids(&route), ["second"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
