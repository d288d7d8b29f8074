//! Small numeric ids for what the maps key by number: rules, hostname patterns, destination
//! sets, routing classes and counter slots.
//!
//! An id stays with its key for as long as the key is in use, so a reconcile only touches what
//! changed. Ids the maps already hold (from before a restart) are preferred for the keys they
//! stood for, so a restart changes nothing in the kernel.

use std::collections::{BTreeMap, BTreeSet};

/// The range of ids ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no free id in {first}..{limit} for the {what}")]
pub struct Exhausted {
    /// What the ids are for.
    pub what: &'static str,
    /// The range.
    pub first: u32,
    /// Its end (exclusive).
    pub limit: u32,
}

/// Ids for keys of type `K`, in `first..limit`.
#[derive(Debug, Clone)]
pub(crate) struct Ids<K> {
    what: &'static str,
    assigned: BTreeMap<K, u32>,
    preferred: BTreeMap<K, u32>,
    first: u32,
    limit: u32,
}

impl<K: Ord + Clone> Ids<K> {
    /// Ids in `first..limit` for `what` (named in errors).
    pub(crate) const fn new(what: &'static str, first: u32, limit: u32) -> Self {
        Self {
            what,
            assigned: BTreeMap::new(),
            preferred: BTreeMap::new(),
            first,
            limit,
        }
    }

    /// Remembers that `key` had `id` (in the maps, before a restart); used when `key` next needs
    /// an id and `id` is free.
    pub(crate) fn prefer(&mut self, key: K, id: u32) {
        if (self.first..self.limit).contains(&id) {
            self.preferred.insert(key, id);
        }
    }

    /// The id of each of `keys`: kept for keys that had one, preferred or lowest free for new
    /// ones. Keys not listed lose their ids.
    pub(crate) fn assign<'k>(
        &mut self,
        keys: impl IntoIterator<Item = &'k K>,
    ) -> Result<BTreeMap<K, u32>, Exhausted>
    where
        K: 'k,
    {
        let keys: BTreeSet<&K> = keys.into_iter().collect();
        self.assigned.retain(|key, _| keys.contains(key));
        let mut used: BTreeSet<u32> = self.assigned.values().copied().collect();
        let mut next = self.first;
        for key in keys {
            if self.assigned.contains_key(key) {
                continue;
            }
            let id = match self.preferred.get(key) {
                Some(id) if !used.contains(id) => *id,
                _ => {
                    while used.contains(&next) {
                        next += 1;
                    }
                    if next >= self.limit {
                        return Err(Exhausted {
                            what: self.what,
                            first: self.first,
                            limit: self.limit,
                        });
                    }
                    next
                }
            };
            used.insert(id);
            self.assigned.insert(key.clone(), id);
        }
        Ok(self.assigned.clone())
    }
}

#[cfg(test)]
#[path = "ids_tests.rs"]
mod tests;
