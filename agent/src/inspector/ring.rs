//! The inspector's memory: the last N exchanges, oldest dropped first. Each
//! entry has an id that only grows, so an entry is found by arithmetic and a
//! client that saw id 41 asks for what came after it.

use std::collections::VecDeque;

/// A bounded ring of entries with growing ids.
#[derive(Debug)]
pub struct Ring<T> {
    entries: VecDeque<(u64, T)>,
    capacity: usize,
    next_id: u64,
}

impl<T> Ring<T> {
    /// A ring that keeps at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Ring<T> {
        let capacity = capacity.max(1);
        Ring {
            entries: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
            next_id: 1,
        }
    }

    /// Adds `make(id)` as the newest entry, dropping the oldest when full;
    /// returns its id.
    pub fn push_with(&mut self, make: impl FnOnce(u64) -> T) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back((id, make(id)));
        id
    }

    /// The entry `id`, if still kept.
    pub fn get(&self, id: u64) -> Option<&T> {
        let first = self.entries.front()?.0;
        let index = usize::try_from(id.checked_sub(first)?).ok()?;
        self.entries.get(index).map(|(_, t)| t)
    }

    /// The entry `id`, mutably, if still kept.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        let first = self.entries.front()?.0;
        let index = usize::try_from(id.checked_sub(first)?).ok()?;
        self.entries.get_mut(index).map(|(_, t)| t)
    }

    /// Newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().rev().map(|(_, t)| t)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every entry (ids keep growing).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_bound_after_ten_thousand() {
        let mut ring = Ring::new(500);
        for i in 0..10_000u64 {
            let id = ring.push_with(|id| (id, vec![0u8; 64]));
            assert_eq!(id, i + 1);
            assert!(ring.len() <= 500);
        }
        assert_eq!(ring.len(), 500);
        // The allocation did not grow past the bound either.
        assert!(
            ring.entries.capacity() < 1024,
            "{}",
            ring.entries.capacity()
        );
        assert!(ring.get(9_500).is_none(), "the oldest are gone");
        assert_eq!(ring.get(9_501).map(|e| e.0), Some(9_501));
        assert_eq!(ring.get(10_000).map(|e| e.0), Some(10_000));
        assert!(ring.get(10_001).is_none());
        assert_eq!(ring.newest_first().next().map(|e| e.0), Some(10_000));
        assert_eq!(ring.newest_first().last().map(|e| e.0), Some(9_501));
    }

    #[test]
    fn capacity_of_zero_keeps_one() {
        let mut ring = Ring::new(0);
        ring.push_with(|id| id);
        ring.push_with(|id| id);
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.get(2), Some(&2));
        ring.clear();
        assert!(ring.is_empty());
        assert_eq!(ring.push_with(|id| id), 3);
    }
}
