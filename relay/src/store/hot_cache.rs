//! What the request path reads on every request, kept in memory: token
//! records, route owners, the tools of a route waiting for approval, the
//! groups of an identity and OAuth access tokens. Each entry is forgotten
//! when the store says it changed ([`HotCache::forget`]): at once for a
//! write of this relay (the store's change hook), within the store's feed
//! delay for another process's (`relay token revoke`). Expiry is checked
//! against the kept records on every request, so it needs no change.
//!
//! An entry read while something was forgotten is not kept (the read may
//! predate the write): each read takes the [`HotCache::generation`] first.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ::store::{Change, OAuthToken, TokenRecord};

/// Most entries of each kind; a full map is emptied.
const MAX_ENTRIES: usize = 4096;

#[derive(Default)]
struct Maps {
    /// By the SHA-256 of the secret.
    tokens: HashMap<Vec<u8>, TokenRecord>,
    /// By route; `None`: no such route.
    owners: HashMap<String, Option<String>>,
    /// By route: the tools whose change waits for approval.
    pending: HashMap<String, Arc<[String]>>,
    /// By email.
    groups: HashMap<String, Arc<[String]>>,
    /// By the SHA-256 of the secret.
    access: HashMap<Vec<u8>, OAuthToken>,
}

/// The request path's reads, kept.
#[derive(Default)]
pub struct HotCache {
    maps: Mutex<Maps>,
    generation: AtomicU64,
}

fn keep<K: Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, value: V) {
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    map.insert(key, value);
}

impl HotCache {
    fn lock(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take before a read whose result is to be kept.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Runs `f` on the maps if nothing was forgotten since `generation`.
    fn keep_if(&self, generation: u64, f: impl FnOnce(&mut Maps)) {
        let mut maps = self.lock();
        if self.generation.load(Ordering::Acquire) == generation {
            f(&mut maps);
        }
    }

    /// Forgets what `change` makes stale.
    pub fn forget(&self, change: &Change) {
        let mut m = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        match change {
            Change::Token { id } => m.tokens.retain(|_, r| r.id != *id),
            Change::Route { name } => {
                m.owners.remove(name);
                m.pending.remove(name);
            }
            Change::Pins { route } => {
                m.pending.remove(route);
            }
            Change::User { email } => {
                m.groups.remove(email);
                m.access.retain(|_, t| t.email != *email);
            }
            Change::OAuthFamily { family } => m.access.retain(|_, t| t.family != *family),
            Change::OAuthToken { id } => m.access.retain(|_, t| t.id != *id),
            Change::Grants { .. } => {}
            Change::Reset => *m = Maps::default(),
        }
    }

    pub fn token(&self, hash: &[u8]) -> Option<TokenRecord> {
        self.lock().tokens.get(hash).cloned()
    }

    pub fn keep_token(&self, generation: u64, hash: Vec<u8>, record: TokenRecord) {
        self.keep_if(generation, |m| keep(&mut m.tokens, hash, record));
    }

    pub fn owner(&self, route: &str) -> Option<Option<String>> {
        self.lock().owners.get(route).cloned()
    }

    pub fn keep_owner(&self, generation: u64, route: &str, owner: Option<String>) {
        self.keep_if(generation, |m| keep(&mut m.owners, route.to_owned(), owner));
    }

    pub fn pending(&self, route: &str) -> Option<Arc<[String]>> {
        self.lock().pending.get(route).cloned()
    }

    pub fn keep_pending(&self, generation: u64, route: &str, tools: Arc<[String]>) {
        self.keep_if(generation, |m| {
            keep(&mut m.pending, route.to_owned(), tools)
        });
    }

    pub fn groups(&self, email: &str) -> Option<Arc<[String]>> {
        self.lock().groups.get(email).cloned()
    }

    pub fn keep_groups(&self, generation: u64, email: &str, groups: Arc<[String]>) {
        self.keep_if(generation, |m| {
            keep(&mut m.groups, email.to_owned(), groups)
        });
    }

    pub fn access(&self, hash: &[u8]) -> Option<OAuthToken> {
        self.lock().access.get(hash).cloned()
    }

    pub fn keep_access(&self, generation: u64, hash: Vec<u8>, token: OAuthToken) {
        self.keep_if(generation, |m| keep(&mut m.access, hash, token));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::token::TokenKind;

    fn record(id: &str) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            kind: TokenKind::Client,
            owner: "a@x".into(),
            name: "n".into(),
            created_at: 0,
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
            replaced_by: None,
        }
    }

    #[test]
    fn a_change_forgets_its_entries_and_a_read_across_it_is_not_kept() {
        let c = HotCache::default();
        let g = c.generation();
        c.keep_token(g, vec![1], record("t1"));
        c.keep_token(g, vec![2], record("t2"));
        c.keep_owner(g, "db", Some("a@x".into()));
        c.keep_groups(g, "a@x", vec!["ops".to_owned()].into());
        assert!(c.token(&[1]).is_some());
        c.forget(&Change::Token { id: "t1".into() });
        assert!(c.token(&[1]).is_none());
        assert!(c.token(&[2]).is_some(), "other tokens stay");
        // Read before the change, kept after it: not kept.
        c.keep_token(g, vec![1], record("t1"));
        assert!(c.token(&[1]).is_none());
        c.forget(&Change::Route { name: "db".into() });
        assert_eq!(c.owner("db"), None);
        c.forget(&Change::User {
            email: "a@x".into(),
        });
        assert!(c.groups("a@x").is_none());
        c.keep_token(c.generation(), vec![3], record("t3"));
        c.forget(&Change::Reset);
        assert!(c.token(&[2]).is_none() && c.token(&[3]).is_none());
    }
}
