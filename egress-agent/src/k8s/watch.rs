//! Watches: one kube-rs watcher per kind, converted to the index's plain data on arrival and
//! sent to the agent loop. A relist (after a watch expires or the agent reconnects) replaces
//! the kind's objects wholesale, so deletions missed while disconnected do not linger.

use std::{collections::BTreeMap, fmt::Debug};

use futures_util::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    core::PartialObjectMeta,
    runtime::{WatchStreamExt as _, watcher},
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    convert::{self, key_of},
    crd::{EgressRedirectPolicy, GATEWAY_GROUP},
    index::Index,
    model::ObjectKey,
};

/// The kinds watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Pods on this node.
    Pods,
    /// Namespaces (metadata only).
    Namespaces,
    /// Policies.
    Policies,
    /// Gateways.
    Gateways,
    /// Services.
    Services,
    /// EndpointSlices.
    Slices,
}

/// Every kind, for readiness.
pub const ALL_KINDS: [Kind; 6] = [
    Kind::Pods,
    Kind::Namespaces,
    Kind::Policies,
    Kind::Gateways,
    Kind::Services,
    Kind::Slices,
];

/// One change of one kind.
#[derive(Debug)]
pub enum Update<T> {
    /// Added or modified.
    Upsert(ObjectKey, T),
    /// Deleted.
    Remove(ObjectKey),
    /// A relist starts: objects until [`Update::Synced`] replace the current ones.
    Relist,
    /// The (re)list is complete.
    Synced,
}

/// A change for the index.
#[derive(Debug)]
pub enum Change {
    /// A pod.
    Pod(Update<super::model::PodInfo>),
    /// A namespace.
    Namespace(Update<super::model::NamespaceInfo>),
    /// A policy (boxed: it carries the whole spec).
    Policy(Update<Box<super::model::PolicyInfo>>),
    /// A Gateway.
    Gateway(Update<super::model::GatewayInfo>),
    /// A Service.
    Service(Update<super::model::ServiceInfo>),
    /// An EndpointSlice.
    Slice(Update<super::model::EndpointSliceInfo>),
}

/// Applies changes to an index, tracking relists.
#[derive(Debug, Default)]
pub struct Applier {
    relisting: BTreeMap<Kind, std::collections::BTreeSet<ObjectKey>>,
    synced: std::collections::BTreeSet<Kind>,
}

impl Applier {
    /// Applies `change`; returns whether the index may have changed.
    pub fn apply(&mut self, index: &mut Index, change: Change) -> bool {
        match change {
            Change::Pod(u) => self.update(Kind::Pods, &mut index.pods, u),
            Change::Namespace(u) => {
                // Namespaces are keyed by name alone in the index.
                let mut as_keyed: BTreeMap<ObjectKey, _> = std::mem::take(&mut index.namespaces)
                    .into_iter()
                    .map(|(name, info)| ((String::new(), name), info))
                    .collect();
                let changed = self.update(Kind::Namespaces, &mut as_keyed, u);
                index.namespaces = as_keyed
                    .into_iter()
                    .map(|((_, name), info)| (name, info))
                    .collect();
                changed
            }
            Change::Policy(u) => {
                let u = match u {
                    Update::Upsert(key, policy) => Update::Upsert(key, *policy),
                    Update::Remove(key) => Update::Remove(key),
                    Update::Relist => Update::Relist,
                    Update::Synced => Update::Synced,
                };
                self.update(Kind::Policies, &mut index.policies, u)
            }
            Change::Gateway(u) => self.update(Kind::Gateways, &mut index.gateways, u),
            Change::Service(u) => self.update(Kind::Services, &mut index.services, u),
            Change::Slice(u) => self.update(Kind::Slices, &mut index.slices, u),
        }
    }

    /// Whether every kind has completed its first list.
    pub fn all_synced(&self) -> bool {
        ALL_KINDS.iter().all(|kind| self.synced.contains(kind))
    }

    fn update<T: PartialEq>(
        &mut self,
        kind: Kind,
        map: &mut BTreeMap<ObjectKey, T>,
        update: Update<T>,
    ) -> bool {
        match update {
            Update::Upsert(key, value) => {
                if let Some(seen) = self.relisting.get_mut(&kind) {
                    seen.insert(key.clone());
                }
                let changed = map.get(&key) != Some(&value);
                map.insert(key, value);
                changed
            }
            Update::Remove(key) => map.remove(&key).is_some(),
            Update::Relist => {
                self.relisting
                    .insert(kind, std::collections::BTreeSet::new());
                false
            }
            Update::Synced => {
                let seen = self.relisting.remove(&kind).unwrap_or_default();
                let before = map.len();
                map.retain(|key, _| seen.contains(key));
                let first = self.synced.insert(kind);
                first || map.len() != before
            }
        }
    }
}

/// Starts every watch; changes arrive on the returned channel.
pub fn start(client: &Client, node: &str) -> mpsc::UnboundedReceiver<Change> {
    let (tx, rx) = mpsc::unbounded_channel();
    let pods: Api<Pod> = Api::all(client.clone());
    let node_pods = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    spawn(
        watcher(pods, node_pods),
        tx.clone(),
        |p| Some(convert::pod(p)),
        Change::Pod,
    );
    // Metadata only: labels are all the index reads.
    let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    spawn(
        watcher(namespaces, watcher::Config::default()),
        tx.clone(),
        |n| Some(convert::namespace(n)),
        Change::Namespace,
    );
    let policies: Api<EgressRedirectPolicy> = Api::all(client.clone());
    spawn(
        watcher(policies, watcher::Config::default()),
        tx.clone(),
        |p| Some(Box::new(convert::policy(p))),
        Change::Policy,
    );
    let gvk = GroupVersionKind::gvk(GATEWAY_GROUP, "v1", "Gateway");
    let gateways: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
    spawn(
        watcher(gateways, watcher::Config::default()),
        tx.clone(),
        |g| Some(convert::gateway(g)),
        Change::Gateway,
    );
    let services: Api<Service> = Api::all(client.clone());
    spawn(
        watcher(services, watcher::Config::default()),
        tx.clone(),
        |s| Some(convert::service(s)),
        Change::Service,
    );
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    spawn(
        watcher(slices, watcher::Config::default()),
        tx,
        |s| Some(convert::endpoint_slice(s)),
        Change::Slice,
    );
    rx
}

fn spawn<K, T, S>(
    stream: S,
    tx: mpsc::UnboundedSender<Change>,
    convert: fn(&K) -> Option<T>,
    wrap: fn(Update<T>) -> Change,
) where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    T: Send + 'static,
    S: futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream.default_backoff());
        let mut missing_reported = false;
        while let Some(event) = stream.next().await {
            let update = match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                    match convert(&object) {
                        Some(value) => Update::Upsert(key_of(&object), value),
                        None => continue,
                    }
                }
                Ok(watcher::Event::Delete(object)) => Update::Remove(key_of(&object)),
                Ok(watcher::Event::Init) => Update::Relist,
                Ok(watcher::Event::InitDone) => Update::Synced,
                // The kind's API is not served (no Gateway API CRDs, say): nothing of that kind
                // exists, which is a complete answer. Retries continue, in case it is installed.
                Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                    if status.code == 404 =>
                {
                    if !missing_reported {
                        missing_reported = true;
                        info!(
                            kind = std::any::type_name::<K>(),
                            "API not served by this cluster; treating it as empty"
                        );
                        if tx.send(wrap(Update::Relist)).is_err()
                            || tx.send(wrap(Update::Synced)).is_err()
                        {
                            return;
                        }
                    }
                    continue;
                }
                Err(err) => {
                    warn!(error = %err, kind = std::any::type_name::<K>(), "watch failed; retrying with backoff");
                    continue;
                }
            };
            if tx.send(wrap(update)).is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
