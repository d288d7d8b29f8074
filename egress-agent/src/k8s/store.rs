//! The objects of one kind as one or more watches report them.
//!
//! A kind may be watched several ways at once (Services: by the gateway labels and by name for
//! each Service a policy references). Each watch is a scope; an object stays while any scope
//! that reported it still does, so one watch relisting or stopping never drops what another
//! still sees.

use std::collections::{BTreeMap, BTreeSet};

use super::model::ObjectKey;

/// A watch's identity within its kind.
pub type ScopeId = u32;

/// The scope of a kind's single, kind-wide watch (and of objects inserted by tests).
pub const WHOLE_KIND: ScopeId = 0;

#[derive(Clone, Debug)]
struct Item<T> {
    value: T,
    scopes: BTreeSet<ScopeId>,
}

/// Objects by namespace and name, each with the scopes that report it.
#[derive(Clone, Debug)]
pub struct Store<T> {
    items: BTreeMap<ObjectKey, Item<T>>,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Self {
            items: BTreeMap::new(),
        }
    }
}

impl<T: PartialEq> Store<T> {
    /// The object at `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<&T> {
        self.items.get(key).map(|item| &item.value)
    }

    /// Every object.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.items.values().map(|item| &item.value)
    }

    /// Every object with its key.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &T)> {
        self.items.iter().map(|(key, item)| (key, &item.value))
    }

    /// How many objects.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether `key` is there.
    pub fn contains_key(&self, key: &ObjectKey) -> bool {
        self.items.contains_key(key)
    }

    /// Inserts for the kind-wide scope (tests and single-watch kinds).
    pub fn insert(&mut self, key: ObjectKey, value: T) -> bool {
        self.upsert(WHOLE_KIND, key, value)
    }

    /// `scope` reports `value` at `key`; returns whether the stored object changed.
    pub fn upsert(&mut self, scope: ScopeId, key: ObjectKey, value: T) -> bool {
        if let Some(item) = self.items.get_mut(&key) {
            item.scopes.insert(scope);
            if item.value == value {
                return false;
            }
            item.value = value;
        } else {
            self.items.insert(
                key,
                Item {
                    value,
                    scopes: BTreeSet::from([scope]),
                },
            );
        }
        true
    }

    /// `scope` no longer reports `key`; returns whether the object left the store.
    pub fn remove(&mut self, scope: ScopeId, key: &ObjectKey) -> bool {
        let Some(item) = self.items.get_mut(key) else {
            return false;
        };
        item.scopes.remove(&scope);
        if item.scopes.is_empty() {
            self.items.remove(key);
            true
        } else {
            false
        }
    }

    /// After a relist of `scope`: what it reported before but not in `seen` is gone from it.
    /// Returns whether any object left the store.
    pub fn retain_scope(&mut self, scope: ScopeId, seen: &BTreeSet<ObjectKey>) -> bool {
        let stale: Vec<ObjectKey> = self
            .items
            .iter()
            .filter(|(key, item)| item.scopes.contains(&scope) && !seen.contains(*key))
            .map(|(key, _)| key.clone())
            .collect();
        let mut removed = false;
        for key in stale {
            removed |= self.remove(scope, &key);
        }
        removed
    }

    /// `scope` stopped: everything only it reported leaves. Returns whether anything left.
    pub fn forget(&mut self, scope: ScopeId) -> bool {
        self.retain_scope(scope, &BTreeSet::new())
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
