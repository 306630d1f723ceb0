//! The policy engines of a running relay: the organisation's policy (from
//! `relay serve --policy FILE`) combined with each route owner's.
//!
//! Until agents send their owners' policies, an owner's layer is the default
//! compiled from no flags: only the owner. Engines are built once per owner
//! and cached, since compiling Cedar text costs far more than a decision.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::error::RelayError;
use policy::{Engine, Policy};

/// The relay's policy engines.
pub struct Policies {
    org: Option<Policy>,
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
                        .map_err(|e| RelayError::Config(format!("policy {e}")))?,
                )
            }
        };
        Ok(Policies {
            org,
            engines: Mutex::new(HashMap::new()),
        })
    }

    /// The engine for routes of `owner`.
    pub fn for_owner(&self, owner: &str) -> Result<Arc<Engine>, RelayError> {
        let mut engines = self.engines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = engines.get(owner) {
            return Ok(e.clone());
        }
        let policy = Policy::from_flags(owner, &[], None, false)
            .map_err(|e| RelayError::Config(format!("owner policy for {owner}: {e}")))?;
        let engine = Arc::new(Engine::new(policy, self.org.clone()));
        engines.insert(owner.to_owned(), engine.clone());
        Ok(engine)
    }
}
