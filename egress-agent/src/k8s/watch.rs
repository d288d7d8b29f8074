//! Watches: kube-rs watchers converted to the index's plain data on arrival and sent to the
//! source's loop. Nothing is watched cluster-wide that grows with the cluster's workloads:
//!
//! * pods: this node's only (field selector);
//! * namespaces: metadata only;
//! * policies and Gateways: all (few; the Gateway API only when discovery says it is served);
//! * Services: those carrying a gateway label (Istio's, Envoy Gateway's), plus each Service a
//!   policy or the agent names, watched by name ([`super::refs`]);
//! * EndpointSlices: only those of the gateway Services and the cluster DNS, by name.
//!
//! Lists are served from the API server's watch cache (`resourceVersion=0`, unpaginated) by
//! default, as the kubelet's are: at thousands of nodes a relist then never reaches etcd.
//! [`Lists::Paginated`] asks for consistent lists in pages instead.
//!
//! A failed watch retries after [`super::backoff`]'s delay, which grows until the watch has
//! completed a list and run without error for a while (not merely started a relist).

use std::{fmt::Debug, time::Duration};

use futures_util::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    core::PartialObjectMeta,
    runtime::watcher,
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    backoff::WatchBackoff,
    convert::{self, key_of},
    crd::{EgressRedirectPolicy, GATEWAY_GROUP},
    index::{ENVOY_GATEWAY_NAME_LABEL, GATEWAY_NAME_LABEL},
    model::{
        EndpointSliceInfo, GatewayInfo, NamespaceInfo, ObjectKey, PodInfo, PolicyInfo, ServiceInfo,
    },
    store::{ScopeId, WHOLE_KIND},
};

/// The kinds watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

impl Kind {
    /// Lower-case plural, for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pods => "pods",
            Self::Namespaces => "namespaces",
            Self::Policies => "egressredirectpolicies",
            Self::Gateways => "gateways",
            Self::Services => "services",
            Self::Slices => "endpointslices",
        }
    }
}

/// How watches list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lists {
    /// From the API server's cache, in one response.
    #[default]
    Cached,
    /// Consistent reads, this many objects per page.
    Paginated(u32),
}

impl Lists {
    fn config(self) -> watcher::Config {
        match self {
            Self::Cached => watcher::Config {
                page_size: None,
                ..watcher::Config::default()
            }
            .any_semantic(),
            Self::Paginated(size) => watcher::Config::default().page_size(size),
        }
    }
}

/// One watch: its kind and its id within the kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    /// The kind.
    pub kind: Kind,
    /// Which of the kind's watches.
    pub id: ScopeId,
}

/// The Services watch by Istio's gateway label.
pub const ISTIO_SERVICES: Scope = Scope {
    kind: Kind::Services,
    id: 1,
};
/// The Services watch by Envoy Gateway's label.
pub const ENVOY_SERVICES: Scope = Scope {
    kind: Kind::Services,
    id: 2,
};
/// The first id of by-name watches.
pub const FIRST_REFERENCE_ID: ScopeId = 16;

const fn whole(kind: Kind) -> Scope {
    Scope {
        kind,
        id: WHOLE_KIND,
    }
}

/// An object, converted.
#[derive(Debug)]
pub enum Object {
    /// A pod.
    Pod(PodInfo),
    /// A namespace.
    Namespace(NamespaceInfo),
    /// A policy (boxed: it carries the whole spec).
    Policy(Box<PolicyInfo>),
    /// A Gateway.
    Gateway(GatewayInfo),
    /// A Service.
    Service(ServiceInfo),
    /// An EndpointSlice.
    Slice(EndpointSliceInfo),
}

/// What a watch reports.
#[derive(Debug)]
pub enum Update {
    /// Added or modified.
    Upsert(ObjectKey, Object),
    /// Deleted.
    Remove(ObjectKey),
    /// A relist starts: objects until [`Update::Synced`] replace the scope's current ones.
    Relist,
    /// The (re)list is complete.
    Synced,
}

/// A change for the index.
#[derive(Debug)]
pub struct Change {
    /// The watch it comes from.
    pub scope: Scope,
    /// What happened.
    pub update: Update,
}

/// Starts the cluster-wide watches; returns their scopes (publishing waits for each).
pub fn start(
    client: &Client,
    node: &str,
    lists: Lists,
    tx: &mpsc::UnboundedSender<Change>,
) -> Vec<Scope> {
    let any = lists.config();
    let pods: Api<Pod> = Api::all(client.clone());
    spawn(
        watcher(pods, any.clone().fields(&format!("spec.nodeName={node}"))),
        whole(Kind::Pods),
        tx.clone(),
        |p| Object::Pod(convert::pod(p)),
    );
    // Metadata only: labels are all the index reads.
    let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    spawn(
        watcher(namespaces, any.clone()),
        whole(Kind::Namespaces),
        tx.clone(),
        |n| Object::Namespace(convert::namespace(n)),
    );
    let policies: Api<EgressRedirectPolicy> = Api::all(client.clone());
    spawn(
        watcher(policies, any.clone()),
        whole(Kind::Policies),
        tx.clone(),
        |p| Object::Policy(Box::new(convert::policy(p))),
    );
    for (scope, label) in [
        (ISTIO_SERVICES, GATEWAY_NAME_LABEL),
        (ENVOY_SERVICES, ENVOY_GATEWAY_NAME_LABEL),
    ] {
        let services: Api<Service> = Api::all(client.clone());
        spawn(
            watcher(services, any.clone().labels(label)),
            scope,
            tx.clone(),
            |s| Object::Service(convert::service(s)),
        );
    }
    tokio::spawn(gateways_when_served(client.clone(), lists, tx.clone()));
    vec![
        whole(Kind::Pods),
        whole(Kind::Namespaces),
        whole(Kind::Policies),
        whole(Kind::Gateways),
        ISTIO_SERVICES,
        ENVOY_SERVICES,
    ]
}

/// Watches one Service by name, or the EndpointSlices of one Service.
pub fn start_reference(
    client: &Client,
    lists: Lists,
    scope: Scope,
    key: &ObjectKey,
    tx: mpsc::UnboundedSender<Change>,
) -> tokio::task::AbortHandle {
    let any = lists.config();
    let (namespace, name) = key;
    if scope.kind == Kind::Slices {
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
        let config = any.labels(&format!("kubernetes.io/service-name={name}"));
        spawn(watcher(slices, config), scope, tx, |s| {
            Object::Slice(convert::endpoint_slice(s))
        })
    } else {
        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        let config = any.fields(&format!("metadata.name={name}"));
        spawn(watcher(services, config), scope, tx, |s| {
            Object::Service(convert::service(s))
        })
    }
}

/// How often discovery is asked again whether the Gateway API is served.
const DISCOVERY_INTERVAL: Duration = Duration::from_mins(1);

/// Watches Gateways while discovery says the API is served. While it is not, Gateways are
/// an empty, complete list (no LIST retried in a loop); if it appears later the watch starts,
/// and if it goes away the Gateways leave.
async fn gateways_when_served(client: Client, lists: Lists, tx: mpsc::UnboundedSender<Change>) {
    let scope = whole(Kind::Gateways);
    let version = format!("{GATEWAY_GROUP}/v1");
    let mut running: Option<tokio::task::AbortHandle> = None;
    let mut reported_absent = false;
    loop {
        let served = match client.list_api_group_resources(&version).await {
            Ok(list) => Some(list.resources.iter().any(|r| r.name == "gateways")),
            Err(kube::Error::Api(status)) if status.code == 404 => Some(false),
            Err(err) => {
                warn!(error = %err, "cannot ask discovery about the Gateway API; asking again");
                None
            }
        };
        match (served, running.is_some()) {
            (Some(true), false) => {
                info!("Gateway API served: watching Gateways");
                let gvk = GroupVersionKind::gvk(GATEWAY_GROUP, "v1", "Gateway");
                let api: Api<DynamicObject> =
                    Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
                running = Some(spawn(
                    watcher(api, lists.config()),
                    scope,
                    tx.clone(),
                    |g| Object::Gateway(convert::gateway(g)),
                ));
                reported_absent = false;
            }
            (Some(false), running_now) if running_now || !reported_absent => {
                if let Some(task) = running.take() {
                    task.abort();
                }
                info!("Gateway API not served: no Gateways (asking discovery again every minute)");
                reported_absent = true;
                for update in [Update::Relist, Update::Synced] {
                    if tx.send(Change { scope, update }).is_err() {
                        return;
                    }
                }
            }
            _ => {}
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(DISCOVERY_INTERVAL).await;
    }
}

/// Runs one watcher, sending its events converted; after an error, the watcher is not polled
/// (it retries on the next poll) until the backoff's delay has passed.
fn spawn<K, S>(
    stream: S,
    scope: Scope,
    tx: mpsc::UnboundedSender<Change>,
    convert: fn(&K) -> Object,
) -> tokio::task::AbortHandle
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    S: futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut backoff = WatchBackoff::default();
        while let Some(event) = stream.next().await {
            let update = match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                    Update::Upsert(key_of(&object), convert(&object))
                }
                Ok(watcher::Event::Delete(object)) => Update::Remove(key_of(&object)),
                Ok(watcher::Event::Init) => Update::Relist,
                Ok(watcher::Event::InitDone) => {
                    backoff.synced();
                    Update::Synced
                }
                // Nothing changes in the index on an error: the watcher retries after the
                // backoff and relists, and only a completed relist removes objects.
                Err(err) => {
                    let delay = if is_gone(&err) {
                        backoff.desynced()
                    } else {
                        backoff.failed()
                    };
                    crate::metrics::watch_restarted(scope.kind.name());
                    warn!(
                        error = %err,
                        kind = scope.kind.name(),
                        failures = backoff.failures(),
                        retry_in = ?delay,
                        "watch failed; retrying in {delay:.1?}"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        // Nobody listens any more: no retry.
                        () = tx.closed() => return,
                    }
                }
            };
            if tx.send(Change { scope, update }).is_err() {
                return;
            }
        }
    });
    task.abort_handle()
}

/// Whether the server answered that the watch's resource version is gone (HTTP 410): a
/// desynchronised watch on a healthy server, not a failing one.
fn is_gone(err: &watcher::Error) -> bool {
    match err {
        watcher::Error::WatchError(status)
        | watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
