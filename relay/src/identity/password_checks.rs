//! Password checks with bounded cost. argon2id takes ~19 MiB of memory per
//! check on purpose; done on the blocking pool, a flood of sign-in posts
//! ran hundreds at once and the allocator kept every one of those
//! megabytes (480 posts took the relay from 24 MiB to 5.5 GiB). Here at
//! most [`MAX_CONCURRENT`] checks run at once, each in one of as many
//! memory areas allocated once and reused; when all are busy, a sign-in
//! is refused at once (429) rather than queued. Before a check, the
//! [`crate::limits::sign_in_throttle`] limits apply.
//!
//! An email without an account is checked against a dummy hash of the
//! same cost, so that timing does not tell which accounts exist.

use std::sync::{Arc, Mutex};

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Password checks running at once, at most.
pub const MAX_CONCURRENT: usize = 2;

/// A hash of nothing with the default cost (`Argon2::default()`, as
/// `relay user add` hashes): what an unknown email is checked against.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZHVtbXlzYWx0ZHVtbXlzYQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// The memory areas of the checks; a free one is a free slot.
pub struct PasswordChecks {
    free: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl Default for PasswordChecks {
    fn default() -> Self {
        PasswordChecks {
            free: Arc::new(Mutex::new(
                (0..MAX_CONCURRENT).map(|_| Vec::new()).collect(),
            )),
        }
    }
}

/// A slot taken: its memory goes back when dropped.
pub struct Slot {
    blocks: Vec<Block>,
    home: Arc<Mutex<Vec<Vec<Block>>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let blocks = std::mem::take(&mut self.blocks);
        self.home
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(blocks);
    }
}

impl PasswordChecks {
    /// A free slot, if there is one.
    pub fn try_slot(&self) -> Option<Slot> {
        let blocks = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
        Some(Slot {
            blocks,
            home: self.free.clone(),
        })
    }
}

impl Slot {
    /// Checks an email and password (blocking: seconds of CPU in a debug
    /// build, tens of milliseconds in a release one).
    /// `stored`: the account's stored hash (none: no such account).
    pub fn check(&mut self, stored: Option<&str>, password: &str) -> bool {
        let hash = stored.unwrap_or(DUMMY_HASH);
        let ok = self.verify(hash, password.as_bytes());
        ok && stored.is_some()
    }

    /// Whether `password` hashes to the PHC string `phc`, in this slot's
    /// memory (grown, once, if the hash asks for more).
    fn verify(&mut self, phc: &str, password: &[u8]) -> bool {
        let Ok(hash) = PasswordHash::new(phc) else {
            return false;
        };
        let Some(expected) = hash.hash else {
            return false;
        };
        let (Ok(algorithm), Ok(version), Ok(params)) = (
            Algorithm::try_from(hash.algorithm),
            hash.version
                .map_or(Ok(Version::default()), Version::try_from),
            Params::try_from(&hash),
        ) else {
            return false;
        };
        let Some(salt) = hash.salt else {
            return false;
        };
        let mut salt_buf = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
            return false;
        };
        let n = params.block_count();
        if self.blocks.len() < n {
            self.blocks.resize(n, Block::default());
        }
        let mut out = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password, salt, &mut out, &mut self.blocks[..n])
            .is_ok()
            && super::ct_eq(&out, expected.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[tokio::test]
    async fn passwords_are_checked_in_reused_memory_and_slots_are_bounded() {
        let dir =
            std::env::temp_dir().join(format!("dbr-pwc-{}", crate::store::token::random_hex(6)));
        let store = Store::open(&dir).expect("open");
        super::super::accounts::add_user(&store, "alice@example.com", "correct horse")
            .await
            .expect("add");
        let alice = store
            .user_password_hash("alice@example.com")
            .await
            .expect("get");
        let nobody = store
            .user_password_hash("nobody@example.com")
            .await
            .expect("get");
        let checks = PasswordChecks::default();
        let mut slots: Vec<Slot> = (0..MAX_CONCURRENT)
            .map(|_| checks.try_slot().expect("free slot"))
            .collect();
        assert!(checks.try_slot().is_none(), "all slots are taken");
        let slot = &mut slots[0];
        assert!(slot.check(alice.as_deref(), "correct horse"));
        let grown = slot.blocks.len();
        assert_eq!(grown, 19456);
        assert!(!slot.check(alice.as_deref(), "wrong horse"));
        // An unknown email costs the same check (the dummy hash) and fails.
        assert!(!slot.check(nobody.as_deref(), "correct horse"));
        assert!(!slot.check(nobody.as_deref(), ""));
        assert_eq!(slot.blocks.len(), grown, "the memory is reused");
        drop(slots);
        let again = checks.try_slot().expect("slots come back");
        assert!(
            again.blocks.is_empty() || again.blocks.len() == grown,
            "a slot keeps its memory"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_dummy_hash_parses_with_the_default_cost() {
        let hash = PasswordHash::new(DUMMY_HASH).expect("phc");
        let params = Params::try_from(&hash).expect("params");
        let default = Params::default();
        assert_eq!(params.m_cost(), default.m_cost());
        assert_eq!(params.t_cost(), default.t_cost());
        assert_eq!(params.p_cost(), default.p_cost());
        assert_eq!(hash.algorithm, Algorithm::default().ident());
    }
}
