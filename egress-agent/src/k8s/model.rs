//! Plain data the index works on, extracted from API objects by pure functions (see
//! `convert.rs`), so the index can be tested with hand-built values and no API server.

use std::{collections::BTreeMap, net::IpAddr};

use super::crd::EgressRedirectPolicySpec;

/// Namespace and name.
pub type ObjectKey = (String, String);

/// A pod on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID: names the pod's cgroup.
    pub uid: String,
    /// QoS class: where the kubelet puts the cgroup.
    pub qos: QosClass,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Whether it has finished (Succeeded/Failed): its cgroup is gone or going.
    pub finished: bool,
}

/// The kubelet's QoS classes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QosClass {
    /// Directly under `kubepods`.
    Guaranteed,
    /// Under `kubepods/burstable`.
    #[default]
    Burstable,
    /// Under `kubepods/besteffort`.
    BestEffort,
}

/// A namespace's labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A policy.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.generation`, for status conditions.
    pub generation: i64,
    /// Creation time (RFC 3339), which orders policies: on a conflict the oldest wins.
    pub created: String,
    /// The spec.
    pub spec: EgressRedirectPolicySpec,
    /// The status conditions as last written (by any node).
    pub conditions: Vec<ConditionState>,
    /// Their `lastTransitionTime`s (RFC 3339), by condition type.
    pub transitions: BTreeMap<String, String>,
}

/// A status condition without its transition time: what nodes compare before writing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionState {
    /// `Accepted` or `ResolvedRefs`.
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
    /// The generation it was computed for.
    pub observed_generation: i64,
}

/// A Gateway API listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerInfo {
    /// `hostname`, if set.
    pub hostname: Option<String>,
    /// Port.
    pub port: u16,
    /// `HTTP`, `HTTPS`, `TLS`, `TCP`, `UDP`.
    pub protocol: String,
}

/// A Gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Listeners.
    pub listeners: Vec<ListenerInfo>,
    /// `status.addresses` of type `IPAddress`.
    pub addresses: Vec<IpAddr>,
}

/// A Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.clusterIPs` (headless: empty).
    pub cluster_ips: Vec<IpAddr>,
    /// (port, protocol) pairs.
    pub ports: Vec<(u16, String)>,
    /// Labels (Istio labels a Gateway's Service `gateway.networking.k8s.io/gateway-name`).
    pub labels: BTreeMap<String, String>,
}

/// An EndpointSlice: which pods back a Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSliceInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The Service (`kubernetes.io/service-name` label).
    pub service: String,
    /// Endpoints whose `targetRef` is a Pod: that pod's name (same namespace).
    pub pods: Vec<String>,
}
