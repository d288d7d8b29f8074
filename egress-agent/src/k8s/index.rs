//! The pure cluster index: watched objects in, desired state out.
//!
//! ```text
//! Namespaces ─┐
//! Pods ───────┤                       ┌─► rules (hostnames, ports, gateway) ─► DNS engine ─┐
//! Policies ───┼─► Index::compute() ───┼─► selected / exempt pods ─► cgroup ids ────────────┼─► desired ─► reconcile
//! Gateways ───┤                       ├─► trusted resolvers (the cluster DNS) ─────────────┘
//! Services ───┤                       ├─► per-policy conditions and problems (Events, status)
//! Slices ─────┘                       └─► the Services and slices to watch by name
//! ```
//!
//! Tenancy: a policy selects pods only in its own namespace, unless its namespace is trusted
//! (the agent's `--trusted-namespace`). A pod is exempt only from the policies whose gateway
//! lists it as an endpoint (the API server's EndpointSlices: nothing a workload can set on
//! itself exempts it).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use super::{
    crd::REDIRECT_LABEL,
    model::{
        Defaults, EndpointSliceInfo, GatewayInfo, NamespaceInfo, ObjectKey, PodInfo, PolicyInfo,
        ServiceInfo,
    },
    policy::PolicyOutcome,
    selector,
    store::Store,
};
use crate::intent::RuleIntent;

/// The label Istio puts on the Service it creates for a Gateway.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Envoy Gateway's labels on the proxy Service it creates (in its own namespace).
pub const ENVOY_GATEWAY_NAME_LABEL: &str = "gateway.envoyproxy.io/owning-gateway-name";
/// See [`ENVOY_GATEWAY_NAME_LABEL`].
pub const ENVOY_GATEWAY_NAMESPACE_LABEL: &str = "gateway.envoyproxy.io/owning-gateway-namespace";
/// The port the cluster DNS answers on.
const DNS_PORT: u16 = 53;

/// A pod as the cgroup side knows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    /// The UID the kubelet names the pod's cgroup with.
    pub uid: String,
    /// Namespace and name, for people.
    pub key: ObjectKey,
}

/// The desired state of this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// Rules, oldest policy first (on a conflict the oldest wins).
    pub rules: Vec<RuleIntent>,
    /// Pods to redirect, with the rules (indices into `rules`) that select them.
    pub selected: BTreeMap<PodRef, BTreeSet<usize>>,
    /// Gateway pods selected by no policy but their own gateway's: they go direct.
    pub exempt: BTreeSet<PodRef>,
    /// Resolvers whose answers to pods are learned: the cluster DNS Service's ClusterIPs and
    /// its endpoints (a socket-level load balancer shows pods the endpoint's address).
    pub trusted_resolvers: Vec<SocketAddr>,
    /// Per-policy verdicts.
    pub outcomes: Vec<PolicyOutcome>,
}

/// Settings of the index: what the cluster admin decided.
#[derive(Clone, Debug, Default)]
pub struct IndexSettings {
    /// Namespaces whose policies may select pods in other namespaces.
    pub trusted_namespaces: BTreeSet<String>,
    /// The cluster DNS Service (`kube-system/kube-dns`).
    pub cluster_dns: Option<ObjectKey>,
}

/// The Services and EndpointSlices the index needs, watched by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct References {
    /// Services by namespace and name.
    pub services: BTreeSet<ObjectKey>,
    /// The EndpointSlices of these Services (namespace, Service name).
    pub slices: BTreeSet<ObjectKey>,
}

/// Everything the watches have seen, for this node (pods) and the cluster (the rest).
#[derive(Clone, Debug, Default)]
pub struct Index {
    /// The admin's settings.
    pub settings: IndexSettings,
    /// Pods on this node.
    pub pods: Store<PodInfo>,
    /// Namespaces (keyed by `("", name)`).
    pub namespaces: Store<NamespaceInfo>,
    /// Policies.
    pub policies: Store<PolicyInfo>,
    /// Gateways.
    pub gateways: Store<GatewayInfo>,
    /// Services: gateway Services (by label) and the ones policies name.
    pub services: Store<ServiceInfo>,
    /// EndpointSlices of the Services in [`References`].
    pub slices: Store<EndpointSliceInfo>,
    /// Defaults this agent took from each policy's target, kept while the target is gone.
    pub remembered: BTreeMap<ObjectKey, Defaults>,
}

impl Index {
    /// Computes the desired state.
    ///
    /// A pod is selected by every policy whose selectors match it, except the policies whose
    /// gateway lists it as an endpoint (a gateway pod must reach the destinations directly).
    pub fn compute(&self) -> ClusterState {
        let mut state = ClusterState::default();
        let mut policies: Vec<&PolicyInfo> = self.policies.values().collect();
        policies.sort_by(|a, b| {
            (&a.created, &a.namespace, &a.name).cmp(&(&b.created, &b.namespace, &b.name))
        });
        let mut backends_of_any: BTreeSet<PodRef> = BTreeSet::new();
        for policy in policies {
            let evaluated = self.evaluate(policy);
            let backends = evaluated
                .service
                .map(|s| self.backends(&s))
                .unwrap_or_default();
            backends_of_any.extend(backends.iter().cloned());
            if let Some(rule) = evaluated.rule {
                let index = state.rules.len();
                for pod in self.selected_by(policy) {
                    if !backends.contains(&pod) {
                        state.selected.entry(pod).or_default().insert(index);
                    }
                }
                state.rules.push(rule);
            }
            state.outcomes.push(evaluated.outcome);
        }
        state.exempt = backends_of_any
            .into_iter()
            .filter(|pod| !state.selected.contains_key(pod))
            .collect();
        state.trusted_resolvers = self.cluster_dns_addresses();
        state
    }

    /// Keeps the defaults each outcome took from its target, for when the target goes.
    pub fn remember(&mut self, state: &ClusterState) {
        let live: BTreeSet<&ObjectKey> = state.outcomes.iter().map(|o| &o.key).collect();
        self.remembered.retain(|key, _| live.contains(key));
        for outcome in &state.outcomes {
            if let Some(defaults) = &outcome.defaults {
                self.remembered
                    .insert(outcome.key.clone(), defaults.clone());
            }
        }
    }

    /// The Services and slices to watch by name: the policies' Service targets, the Services
    /// of their Gateways (their slices only: the Services come from the label watches), and
    /// the cluster DNS.
    pub fn references(&self) -> References {
        let mut refs = References::default();
        for policy in self.policies.values() {
            let target = &policy.spec.target_ref;
            if target.kind == "Service" && target.group.is_empty() {
                let key = (policy.namespace.clone(), target.name.clone());
                refs.services.insert(key.clone());
                refs.slices.insert(key);
            } else if let Some(service) = self.gateway_service(&policy.namespace, &target.name) {
                refs.slices
                    .insert((service.namespace.clone(), service.name.clone()));
            }
        }
        if let Some(dns) = &self.settings.cluster_dns {
            refs.services.insert(dns.clone());
            refs.slices.insert(dns.clone());
        }
        refs
    }

    /// The cluster DNS Service's ClusterIPs and endpoint addresses, on port 53.
    fn cluster_dns_addresses(&self) -> Vec<SocketAddr> {
        let Some(key) = &self.settings.cluster_dns else {
            return Vec::new();
        };
        let mut addresses: Vec<SocketAddr> = self
            .services
            .get(key)
            .into_iter()
            .flat_map(|s| s.cluster_ips.iter())
            .chain(
                self.slices
                    .values()
                    .filter(|slice| slice.namespace == key.0 && slice.service == key.1)
                    .flat_map(|slice| slice.addresses.iter()),
            )
            .map(|ip| SocketAddr::new(*ip, DNS_PORT))
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        addresses
    }

    /// Whether a namespace has pods on this node (only then do its labels matter here).
    pub fn has_local_pods(&self, namespace: &str) -> bool {
        self.pods.values().any(|pod| pod.namespace == namespace)
    }

    /// Pods on this node backing a Service, according to its EndpointSlices.
    fn backends(&self, service: &ObjectKey) -> BTreeSet<PodRef> {
        self.slices
            .values()
            .filter(|slice| slice.namespace == service.0 && slice.service == service.1)
            .flat_map(|slice| slice.pods.iter())
            .filter_map(|pod| self.pods.get(&(service.0.clone(), pod.clone())))
            .map(pod_ref)
            .collect()
    }

    /// Pods on this node a policy selects: in its own namespace, or (from a trusted namespace)
    /// in the namespaces its `namespaceSelector` matches.
    fn selected_by(&self, policy: &PolicyInfo) -> BTreeSet<PodRef> {
        self.pods
            .values()
            .filter(|pod| self.selection(policy, pod).selected)
            .map(pod_ref)
            .collect()
    }

    /// Whether `policy`'s selectors take `pod`, and why (for `explain`). Exemption as a gateway
    /// endpoint and acceptance are judged separately.
    pub fn selection(&self, policy: &PolicyInfo, pod: &PodInfo) -> Selection {
        let spec = &policy.spec;
        let no_labels = BTreeMap::new();
        let namespace_labels = self
            .namespaces
            .get(&(String::new(), pod.namespace.clone()))
            .map_or(&no_labels, |n| &n.labels);
        if pod.finished {
            return Selection::no("the pod has finished");
        }
        if pod.namespace != policy.namespace
            && !self.settings.trusted_namespaces.contains(&policy.namespace)
        {
            return Selection::no(&format!(
                "the policy's namespace {} is not trusted to select pods in other namespaces",
                policy.namespace
            ));
        }
        if let Some(selector) = &spec.namespace_selector
            && !selector::matches(selector, namespace_labels)
        {
            return Selection::no(&format!(
                "namespaceSelector does not match namespace {}'s labels",
                pod.namespace
            ));
        }
        match &spec.workload_selector {
            Some(selector) if selector::matches(selector, &pod.labels) => {
                Selection::yes("workloadSelector matches the pod's labels")
            }
            Some(_) => Selection::no("workloadSelector does not match the pod's labels"),
            None => match pod.labels.get(REDIRECT_LABEL).map(String::as_str) {
                Some("true") => {
                    Selection::yes(&format!("the pod is labelled {REDIRECT_LABEL}=true"))
                }
                Some("false") => Selection::no(&format!(
                    "opted out: the pod is labelled {REDIRECT_LABEL}=false"
                )),
                _ if namespace_labels
                    .get(REDIRECT_LABEL)
                    .is_some_and(|v| v == "true") =>
                {
                    Selection::yes(&format!(
                        "namespace {} is labelled {REDIRECT_LABEL}=true",
                        pod.namespace
                    ))
                }
                _ => Selection::no(&format!(
                    "neither the pod nor namespace {} is labelled {REDIRECT_LABEL}=true",
                    pod.namespace
                )),
            },
        }
    }

    /// The gateway Service whose endpoints exempt pods from `policy`, and whether `pod` is one.
    pub fn exempting_service(&self, policy: &PolicyInfo, pod: &PodInfo) -> Option<ObjectKey> {
        let service = self.evaluate(policy).service?;
        self.backends(&service)
            .contains(&pod_ref(pod))
            .then_some(service)
    }
}

/// A policy's selectors' verdict on a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Whether it is selected.
    pub selected: bool,
    /// Why, in words.
    pub why: String,
}

impl Selection {
    fn yes(why: &str) -> Self {
        Self {
            selected: true,
            why: why.to_owned(),
        }
    }

    fn no(why: &str) -> Self {
        Self {
            selected: false,
            why: why.to_owned(),
        }
    }
}

fn pod_ref(pod: &PodInfo) -> PodRef {
    PodRef {
        uid: pod.cgroup_uid.clone(),
        key: (pod.namespace.clone(), pod.name.clone()),
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
