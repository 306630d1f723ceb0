//! The policy engines of a running relay: the organisation's policy (from
//! `relay serve --policy FILE`) combined with each route owner's (sent by the
//! agent in its hello: compiled from `agent connect --allow/--tools/--read-only`
//! or read from `agent connect --policy FILE`).
//!
//! A route offered without a policy gets the default: only its owner.
//! Engines are built once per distinct owner policy text and cached, since
//! compiling Cedar text costs far more than a decision, and a reconnecting
//! agent sends the same text again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::error::RelayError;
use policy::{Engine, Policy};

/// Most distinct owner policies kept compiled; the cache is emptied when full
/// (engines in use stay alive through their sessions).
const CACHE_ENTRIES: usize = 256;

/// The relay's policy engines.
pub struct Policies {
    org: Option<Policy>,
    /// Owner-only, under the organisation's policy.
    default: Arc<Engine>,
    engines: Mutex<HashMap<String, Arc<Engine>>>,
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
}
