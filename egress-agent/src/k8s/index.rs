//! The pure cluster index: watched objects in, desired state out.
//!
//! ```text
//! Namespaces ─┐
//! Pods ───────┤                       ┌─► rules (hostnames, ports, gateway) ─► DNS engine ─┐
//! Policies ───┼─► Index::compute() ───┼─► selected / exempt pods ─► cgroup ids ────────────┼─► desired ─► reconcile
//! Gateways ───┤                       └─► per-policy conditions and problems (Events, status)
//! Services ───┤
//! Slices ─────┘
//! ```
//!
//! Exemption comes only from the gateway Service's EndpointSlices (pods the API server lists as
//! its backends): nothing a workload can set on itself exempts it.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    crd::{GATEWAY_GROUP, PortProtocol, REDIRECT_LABEL},
    model::{
        EndpointSliceInfo, GatewayInfo, NamespaceInfo, ObjectKey, PodInfo, PolicyInfo, QosClass,
        ServiceInfo,
    },
    selector,
};
use crate::{
    config::normalize_host,
    intent::{PolicyKey, PortMap, RuleIntent, RuleOwner},
    route::{Gateways, Protocol},
};

/// The label Istio puts on the Service it creates for a Gateway.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// A pod's cgroup identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    /// UID.
    pub uid: String,
    /// QoS class.
    pub qos: QosClass,
}

/// Something wrong with a policy, reported as an Event and in its conditions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// The target does not exist.
    TargetNotFound(String),
    /// The target exists but has no address yet.
    NoGatewayAddress(String),
    /// No hostnames (none given and none from the Gateway's listeners).
    NoHostnames,
    /// No ports (none given and none from the target).
    NoPorts,
    /// Another policy claims the same destination with another gateway (found at runtime).
    Conflict(String),
    /// A hostname does not resolve (found at runtime by the DNS engine).
    Unresolvable(String),
}

impl Problem {
    /// The Event / condition reason.
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::TargetNotFound(_) => "TargetNotFound",
            Self::NoGatewayAddress(_) => "NoGatewayAddress",
            Self::Unresolvable(_) => "HostnameUnresolvable",
            Self::NoHostnames => "NoHostnames",
            Self::NoPorts => "NoPorts",
            Self::Conflict(_) => "Conflict",
        }
    }

    /// A sentence for people.
    pub fn message(&self) -> String {
        match self {
            Self::TargetNotFound(target) => format!("target {target} not found"),
            Self::NoGatewayAddress(target) => format!("target {target} has no address yet"),
            Self::NoHostnames => {
                "no hostnames: set spec.hostnames or give the Gateway listener hostnames".to_owned()
            }
            Self::NoPorts => "no ports: set spec.ports or give the target ports".to_owned(),
            Self::Conflict(message) | Self::Unresolvable(message) => message.clone(),
        }
    }
}

/// A node-independent verdict on a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Condition status.
    pub ok: bool,
    /// Condition reason.
    pub reason: String,
    /// Condition message.
    pub message: String,
}

/// What the index concluded about one policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyOutcome {
    /// The policy.
    pub key: ObjectKey,
    /// `metadata.generation` the verdicts are for.
    pub generation: i64,
    /// `Accepted`: the spec is usable.
    pub accepted: Verdict,
    /// `ResolvedRefs`: the target exists and has an address.
    pub resolved_refs: Verdict,
    /// Everything worth an Event.
    pub problems: Vec<Problem>,
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
    /// Per-policy verdicts.
    pub outcomes: Vec<PolicyOutcome>,
}

/// Everything the watches have seen, for this node (pods) and the cluster (the rest).
#[derive(Clone, Debug, Default)]
pub struct Index {
    /// Pods on this node.
    pub pods: BTreeMap<ObjectKey, PodInfo>,
    /// Namespaces.
    pub namespaces: BTreeMap<String, NamespaceInfo>,
    /// Policies.
    pub policies: BTreeMap<ObjectKey, PolicyInfo>,
    /// Gateways.
    pub gateways: BTreeMap<ObjectKey, GatewayInfo>,
    /// Services.
    pub services: BTreeMap<ObjectKey, ServiceInfo>,
    /// EndpointSlices.
    pub slices: BTreeMap<ObjectKey, EndpointSliceInfo>,
}

/// What a policy's target resolved to.
struct Target {
    gateway: Gateways,
    service: Option<ObjectKey>,
    default_ports: Vec<PortMap>,
    default_hosts: Vec<String>,
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
            let (rule, outcome, service) = self.policy(policy);
            let backends = service.map(|s| self.backends(&s)).unwrap_or_default();
            backends_of_any.extend(backends.iter().cloned());
            if let Some(rule) = rule {
                let index = state.rules.len();
                for pod in self.selected_by(policy) {
                    if !backends.contains(&pod) {
                        state.selected.entry(pod).or_default().insert(index);
                    }
                }
                state.rules.push(rule);
            }
            state.outcomes.push(outcome);
        }
        state.exempt = backends_of_any
            .into_iter()
            .filter(|pod| !state.selected.contains_key(pod))
            .collect();
        state
    }

    /// The rule (if usable), the outcome and the gateway Service of one policy.
    fn policy(
        &self,
        policy: &PolicyInfo,
    ) -> (Option<RuleIntent>, PolicyOutcome, Option<ObjectKey>) {
        let spec = &policy.spec;
        let target_name = format!(
            "{}/{}/{}",
            spec.target_ref.kind, policy.namespace, spec.target_ref.name
        );
        let mut problems = Vec::new();
        let target = self.target(policy);
        let resolved_refs = match &target {
            None => {
                problems.push(Problem::TargetNotFound(target_name.clone()));
                verdict(false, "TargetNotFound", &format!("{target_name} not found"))
            }
            Some(t) if t.gateway.is_empty() => {
                problems.push(Problem::NoGatewayAddress(target_name.clone()));
                verdict(
                    false,
                    "NoGatewayAddress",
                    &format!("{target_name} has no address yet"),
                )
            }
            Some(_) => verdict(true, "ResolvedRefs", &format!("{target_name} resolved")),
        };
        let hostnames: Vec<String> = if spec.hostnames.is_empty() {
            target
                .as_ref()
                .map(|t| t.default_hosts.clone())
                .unwrap_or_default()
        } else {
            spec.hostnames.iter().map(|h| h.0.clone()).collect()
        };
        let hostnames: Vec<String> = hostnames.iter().map(|h| normalize_host(h)).collect();
        let hosts = hostnames;
        let ports: Vec<PortMap> = if spec.ports.is_empty() {
            target
                .as_ref()
                .map(|t| t.default_ports.clone())
                .unwrap_or_default()
        } else {
            spec.ports
                .iter()
                .map(|p| PortMap {
                    port: p.port,
                    gateway_port: p.gateway_port.unwrap_or(p.port),
                    protocol: match p.protocol {
                        Some(PortProtocol::Udp) => Protocol::Udp,
                        Some(PortProtocol::Tcp) | None => Protocol::Tcp,
                    },
                })
                .collect()
        };
        let mut accepted = verdict(true, "Accepted", "policy accepted");
        if hosts.is_empty() && target.is_some() {
            problems.push(Problem::NoHostnames);
            accepted = verdict(false, "NoHostnames", &Problem::NoHostnames.message());
        } else if ports.is_empty() && target.is_some() {
            problems.push(Problem::NoPorts);
            accepted = verdict(false, "NoPorts", &Problem::NoPorts.message());
        }
        let gateway = target.as_ref().map(|t| t.gateway).unwrap_or_default();
        // A missing target keeps the rule only when it blocks (fail-closed): with no gateway
        // the datapath refuses instead of letting connections go direct.
        let usable = accepted.ok
            && !hosts.is_empty()
            && !ports.is_empty()
            && (!gateway.is_empty() || spec.fail_closed);
        let rule = usable.then(|| RuleIntent {
            owner: RuleOwner::Policy(PolicyKey {
                namespace: policy.namespace.clone(),
                name: policy.name.clone(),
            }),
            gateways: gateway,
            hosts,
            addresses: Vec::new(),
            fail_closed: spec.fail_closed,
            refuse_quic: spec.refuse_quic.unwrap_or(true),
            ports,
        });
        let outcome = PolicyOutcome {
            key: (policy.namespace.clone(), policy.name.clone()),
            generation: policy.generation,
            accepted,
            resolved_refs,
            problems,
        };
        (rule, outcome, target.and_then(|t| t.service))
    }

    fn target(&self, policy: &PolicyInfo) -> Option<Target> {
        let target = &policy.spec.target_ref;
        let key = (policy.namespace.clone(), target.name.clone());
        match (target.group.as_str(), target.kind.as_str()) {
            (GATEWAY_GROUP, "Gateway") => {
                let gateway = self.gateways.get(&key)?;
                let service = self.services.values().find(|s| {
                    s.namespace == policy.namespace
                        && s.labels.get(GATEWAY_NAME_LABEL) == Some(&target.name)
                });
                let address = if gateway.addresses.is_empty() {
                    Gateways::from_addresses(
                        service
                            .into_iter()
                            .flat_map(|s| s.cluster_ips.iter().copied()),
                    )
                } else {
                    Gateways::from_addresses(gateway.addresses.iter().copied())
                };
                // No Service labelled for the Gateway: the Service holding its address backs it.
                let service = service.or_else(|| {
                    let addresses = address.addresses();
                    self.services.values().find(|s| {
                        s.namespace == policy.namespace
                            && addresses.iter().any(|a| s.cluster_ips.contains(a))
                    })
                });
                let mut default_ports = Vec::new();
                let mut default_hosts = Vec::new();
                for listener in &gateway.listeners {
                    let protocol = if listener.protocol == "UDP" {
                        Protocol::Udp
                    } else {
                        Protocol::Tcp
                    };
                    let port = PortMap {
                        port: listener.port,
                        gateway_port: listener.port,
                        protocol,
                    };
                    if !default_ports.contains(&port) {
                        default_ports.push(port);
                    }
                    if let Some(host) = &listener.hostname
                        && !default_hosts.contains(host)
                    {
                        default_hosts.push(host.clone());
                    }
                }
                Some(Target {
                    gateway: address,
                    service: service.map(|s| (s.namespace.clone(), s.name.clone())),
                    default_ports,
                    default_hosts,
                })
            }
            ("", "Service") => {
                let service = self.services.get(&key)?;
                let default_ports = service
                    .ports
                    .iter()
                    .map(|(port, protocol)| PortMap {
                        port: *port,
                        gateway_port: *port,
                        protocol: if protocol == "UDP" {
                            Protocol::Udp
                        } else {
                            Protocol::Tcp
                        },
                    })
                    .collect();
                Some(Target {
                    gateway: Gateways::from_addresses(service.cluster_ips.iter().copied()),
                    service: Some(key),
                    default_ports,
                    default_hosts: Vec::new(),
                })
            }
            _ => None,
        }
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

    /// Pods on this node a policy selects.
    fn selected_by(&self, policy: &PolicyInfo) -> BTreeSet<PodRef> {
        let spec = &policy.spec;
        self.pods
            .values()
            .filter(|pod| !pod.finished)
            .filter(|pod| {
                let namespace_labels = self
                    .namespaces
                    .get(&pod.namespace)
                    .map(|n| n.labels.clone())
                    .unwrap_or_default();
                let namespace_ok = spec
                    .namespace_selector
                    .as_ref()
                    .is_none_or(|sel| selector::matches(sel, &namespace_labels));
                let pod_ok = match &spec.workload_selector {
                    Some(sel) => selector::matches(sel, &pod.labels),
                    None => match pod.labels.get(REDIRECT_LABEL).map(String::as_str) {
                        Some("true") => true,
                        Some("false") => false,
                        _ => namespace_labels
                            .get(REDIRECT_LABEL)
                            .is_some_and(|v| v == "true"),
                    },
                };
                namespace_ok && pod_ok
            })
            .map(pod_ref)
            .collect()
    }
}

fn pod_ref(pod: &PodInfo) -> PodRef {
    PodRef {
        uid: pod.uid.clone(),
        qos: pod.qos,
    }
}

fn verdict(ok: bool, reason: &str, message: &str) -> Verdict {
    Verdict {
        ok,
        reason: reason.to_owned(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
