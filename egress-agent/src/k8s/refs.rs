//! Watches by name: one per Service a policy (or the agent) names, and one per gateway
//! Service's EndpointSlices, started and stopped as the index's references change.

use std::collections::BTreeMap;

use kube::Client;
use tokio::{sync::mpsc, task::AbortHandle};
use tracing::debug;

use super::{
    apply::Applier,
    index::{Index, References},
    model::ObjectKey,
    store::ScopeId,
    watch::{self, Change, FIRST_REFERENCE_ID, Kind, Lists, Scope},
};

/// The running by-name watches.
pub struct ReferenceWatches {
    client: Client,
    lists: Lists,
    tx: mpsc::UnboundedSender<Change>,
    running: BTreeMap<(Kind, ObjectKey), (Scope, AbortHandle)>,
    next_id: ScopeId,
}

impl ReferenceWatches {
    /// No watches yet; changes go to `tx`.
    pub fn new(client: Client, lists: Lists, tx: mpsc::UnboundedSender<Change>) -> Self {
        Self {
            client,
            lists,
            tx,
            running: BTreeMap::new(),
            next_id: FIRST_REFERENCE_ID,
        }
    }

    /// Starts the watches `refs` needs and stops the others (their objects leave the index).
    /// Returns whether the index changed.
    pub fn sync(&mut self, refs: &References, applier: &mut Applier, index: &mut Index) -> bool {
        let wanted: Vec<(Kind, &ObjectKey)> = refs
            .services
            .iter()
            .map(|key| (Kind::Services, key))
            .chain(refs.slices.iter().map(|key| (Kind::Slices, key)))
            .collect();
        let mut changed = false;
        let stale: Vec<(Kind, ObjectKey)> = self
            .running
            .keys()
            .filter(|(kind, key)| !wanted.contains(&(*kind, key)))
            .cloned()
            .collect();
        for name in stale {
            if let Some((scope, task)) = self.running.remove(&name) {
                debug!(kind = name.0.name(), object = %format!("{}/{}", name.1.0, name.1.1), "watch by name stopped");
                task.abort();
                changed |= applier.forget(index, scope);
            }
        }
        for (kind, key) in wanted {
            if self.running.contains_key(&(kind, key.clone())) {
                continue;
            }
            let scope = Scope {
                kind,
                id: self.next_id,
            };
            self.next_id += 1;
            debug!(kind = kind.name(), object = %format!("{}/{}", key.0, key.1), "watch by name started");
            applier.expect(scope);
            let task =
                watch::start_reference(&self.client, self.lists, scope, key, self.tx.clone());
            self.running.insert((kind, key.clone()), (scope, task));
        }
        changed
    }
}

impl Drop for ReferenceWatches {
    fn drop(&mut self) {
        for (_, task) in self.running.values() {
            task.abort();
        }
    }
}
