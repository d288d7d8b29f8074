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
    /// UID in the API (Events name the pod by it).
    pub uid: String,
    /// The UID the kubelet names the pod's cgroup with: the API UID, except for a static pod,
    /// whose mirror pod carries the kubelet's own in `kubernetes.io/config.mirror`.
    pub cgroup_uid: String,
    /// QoS class: where the kubelet puts the cgroup.
    pub qos: QosClass,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Whether it has finished (Succeeded/Failed): its cgroup is gone or going.
    pub finished: bool,
    /// Its containers' IDs: where the kubelet makes no pod cgroup (`cgroupsPerQOS=false`)
    /// the containers' cgroups are selected instead.
    pub container_ids: Vec<String>,
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
    /// UID (Events reference it, so `kubectl describe` finds them).
    pub uid: String,
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
    /// The defaults last taken from the target, as the status records them.
    pub kept: Option<Defaults>,
}

/// Hostnames and ports a policy takes from its target when it names none itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Defaults {
    /// From the Gateway's usable listeners.
    pub hostnames: Vec<String>,
    /// From the usable listeners or the Service's ports.
    pub ports: Vec<crate::intent::PortMap>,
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
    /// Name.
    pub name: String,
    /// `hostname`, if set.
    pub hostname: Option<String>,
    /// Port.
    pub port: u16,
    /// `HTTP`, `HTTPS`, `TLS`, `TCP`, `UDP`.
    pub protocol: String,
    /// Whether traffic sent to it goes anywhere: its status says routes are attached or it is
    /// `Programmed`. Only usable listeners give defaults.
    pub usable: bool,
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
    /// Every endpoint address (DNS answers from the cluster DNS's endpoints are trusted).
    pub addresses: Vec<IpAddr>,
}
