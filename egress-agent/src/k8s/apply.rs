//! Applying watch changes to the index, tracking each watch's relists and first sync.
//!
//! A relist (the first list, or after a watch expired) replaces what that watch reported, so
//! deletions missed while disconnected do not linger; an error never empties anything, because
//! only a completed relist removes objects. The source publishes only once every watch it
//! started has completed its first list.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    index::Index,
    model::ObjectKey,
    store::Store,
    watch::{Change, Kind, Object, Scope, Update},
};

/// Applies changes to an index.
#[derive(Debug, Default)]
pub struct Applier {
    relisting: BTreeMap<Scope, BTreeSet<ObjectKey>>,
    synced: BTreeSet<Scope>,
    expected: BTreeSet<Scope>,
}

impl Applier {
    /// A watch started: publishing waits for its first list.
    pub fn expect(&mut self, scope: Scope) {
        self.expected.insert(scope);
    }

    /// A watch stopped: what only it reported leaves the index. Returns whether the index
    /// changed.
    pub fn forget(&mut self, index: &mut Index, scope: Scope) -> bool {
        self.expected.remove(&scope);
        self.synced.remove(&scope);
        self.relisting.remove(&scope);
        match scope.kind {
            Kind::Pods => index.pods.forget(scope.id),
            Kind::Namespaces => index.namespaces.forget(scope.id),
            Kind::Policies => index.policies.forget(scope.id),
            Kind::Gateways => index.gateways.forget(scope.id),
            Kind::Services => index.services.forget(scope.id),
            Kind::Slices => index.slices.forget(scope.id),
        }
    }

    /// Whether every watch started has completed its first list.
    pub fn all_synced(&self) -> bool {
        self.expected
            .iter()
            .all(|scope| self.synced.contains(scope))
    }

    /// Applies `change`; returns whether the computed state may have changed.
    pub fn apply(&mut self, index: &mut Index, change: Change) -> bool {
        let Change { scope, update } = change;
        match update {
            Update::Upsert(key, object) => {
                if let Some(seen) = self.relisting.get_mut(&scope) {
                    seen.insert(key.clone());
                }
                upsert(index, scope, key, object)
            }
            Update::Remove(key) => {
                let local_namespace =
                    scope.kind == Kind::Namespaces && index.has_local_pods(&key.1);
                let removed = remove(index, scope, &key);
                removed && (scope.kind != Kind::Namespaces || local_namespace)
            }
            Update::Relist => {
                self.relisting.insert(scope, BTreeSet::new());
                false
            }
            Update::Synced => {
                let seen = self.relisting.remove(&scope).unwrap_or_default();
                let removed = match scope.kind {
                    Kind::Pods => index.pods.retain_scope(scope.id, &seen),
                    Kind::Namespaces => index.namespaces.retain_scope(scope.id, &seen),
                    Kind::Policies => index.policies.retain_scope(scope.id, &seen),
                    Kind::Gateways => index.gateways.retain_scope(scope.id, &seen),
                    Kind::Services => index.services.retain_scope(scope.id, &seen),
                    Kind::Slices => index.slices.retain_scope(scope.id, &seen),
                };
                let first = self.synced.insert(scope);
                first || removed
            }
        }
    }
}

fn upsert(index: &mut Index, scope: Scope, key: ObjectKey, object: Object) -> bool {
    let id = scope.id;
    match object {
        Object::Pod(pod) => index.pods.upsert(id, key, pod),
        // A namespace's labels matter here only when it has pods on this node: other updates
        // are stored and cost nothing more.
        Object::Namespace(namespace) => {
            let name = namespace.name.clone();
            index.namespaces.upsert(id, key, namespace) && index.has_local_pods(&name)
        }
        Object::Policy(policy) => index.policies.upsert(id, key, *policy),
        Object::Gateway(gateway) => index.gateways.upsert(id, key, gateway),
        Object::Service(service) => index.services.upsert(id, key, service),
        Object::Slice(slice) => index.slices.upsert(id, key, slice),
    }
}

fn remove(index: &mut Index, scope: Scope, key: &ObjectKey) -> bool {
    fn gone<T: PartialEq>(store: &mut Store<T>, id: u32, key: &ObjectKey) -> bool {
        store.remove(id, key)
    }
    match scope.kind {
        Kind::Pods => gone(&mut index.pods, scope.id, key),
        Kind::Namespaces => gone(&mut index.namespaces, scope.id, key),
        Kind::Policies => gone(&mut index.policies, scope.id, key),
        Kind::Gateways => gone(&mut index.gateways, scope.id, key),
        Kind::Services => gone(&mut index.services, scope.id, key),
        Kind::Slices => gone(&mut index.slices, scope.id, key),
    }
}
