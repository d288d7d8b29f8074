//! One policy evaluated against the index: its target's gateway and defaults, whether it is
//! accepted, and the rule it puts in force.
//!
//! Fail-closed holds on every path: a target that is gone or has no address refuses the
//! policy's destinations; hostnames and ports taken from the target are kept (in the status)
//! when the target goes away; a socket of a family the gateway lacks is refused by the
//! datapath. The `FailClosed` condition names the path in effect.

use super::{
    crd::GATEWAY_GROUP,
    index::{ENVOY_GATEWAY_NAME_LABEL, ENVOY_GATEWAY_NAMESPACE_LABEL, GATEWAY_NAME_LABEL, Index},
    model::{Defaults, ObjectKey, PolicyInfo, ServiceInfo},
};
use crate::{
    config::normalize_host,
    intent::{PolicyKey, PortMap, RuleIntent, RuleOwner},
    route::{Gateways, Protocol},
};

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
    /// It selects outside its namespace from a namespace that is not trusted to.
    NamespaceNotTrusted(String),
    /// A hostname the datapath cannot match (a wildcard of a single label, say).
    InvalidHostname(String),
    /// A UDP port: replies from one gateway port can be attributed to one destination only,
    /// and a policy's hostnames have many addresses.
    UdpNotSupported,
    /// Another policy claims the same destination with another gateway (found at runtime).
    Conflict(String),
    /// A hostname does not resolve (found at runtime by the DNS engine).
    Unresolvable(String),
    /// A selected pod's cgroup was not found on a node (found at runtime).
    CgroupNotFound(String),
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
            Self::NamespaceNotTrusted(_) => "NamespaceNotTrusted",
            Self::InvalidHostname(_) => "InvalidHostname",
            Self::UdpNotSupported => "UDPNotSupported",
            Self::Conflict(_) => "Conflict",
            Self::CgroupNotFound(_) => "PodCgroupNotFound",
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
            Self::NamespaceNotTrusted(namespace) => format!(
                "spec.namespaceSelector selects pods outside namespace {namespace}, which only \
                 policies in trusted namespaces may do (the egress-agent-tenancy ConfigMap)"
            ),
            Self::UdpNotSupported => "a UDP port needs exactly one destination address (replies \
                 from a gateway port are attributed to one destination), and a policy's hostnames \
                 have many: use TCP, or a standalone rule with one address"
                .to_owned(),
            Self::InvalidHostname(message)
            | Self::Conflict(message)
            | Self::Unresolvable(message)
            | Self::CgroupNotFound(message) => message.clone(),
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
    /// Its UID.
    pub uid: String,
    /// `metadata.generation` the verdicts are for.
    pub generation: i64,
    /// `Accepted`: the spec is usable.
    pub accepted: Verdict,
    /// `ResolvedRefs`: the target exists and has an address.
    pub resolved_refs: Verdict,
    /// `FailClosed`, for fail-closed policies: whether (and why) connections are refused.
    pub fail_closed: Option<Verdict>,
    /// The defaults to record in the status (taken from the target now).
    pub defaults: Option<Defaults>,
    /// Everything worth an Event.
    pub problems: Vec<Problem>,
}

/// What a policy's target resolved to.
pub(crate) struct Target {
    pub gateway: Gateways,
    /// The Service whose endpoints are the gateway's pods.
    pub service: Option<ObjectKey>,
    pub defaults: Defaults,
}

/// A policy, evaluated.
pub(crate) struct Evaluated {
    pub rule: Option<RuleIntent>,
    pub outcome: PolicyOutcome,
    pub service: Option<ObjectKey>,
}

impl Index {
    /// Evaluates one policy.
    pub(crate) fn evaluate(&self, policy: &PolicyInfo) -> Evaluated {
        let spec = &policy.spec;
        let target_name = format!(
            "{}/{}/{}",
            spec.target_ref.kind, policy.namespace, spec.target_ref.name
        );
        let mut problems = Vec::new();
        let target = self.target(policy);
        let gateway = target.as_ref().map(|t| t.gateway).unwrap_or_default();
        let resolved_refs = match &target {
            None => {
                problems.push(Problem::TargetNotFound(target_name.clone()));
                verdict(false, "TargetNotFound", &format!("{target_name} not found"))
            }
            Some(_) if gateway.is_empty() => {
                problems.push(Problem::NoGatewayAddress(target_name.clone()));
                verdict(
                    false,
                    "NoGatewayAddress",
                    &format!("{target_name} has no address (no ClusterIP) yet"),
                )
            }
            Some(_) => verdict(true, "ResolvedRefs", &format!("{target_name} resolved")),
        };
        let current = target
            .as_ref()
            .map(|t| t.defaults.clone())
            .unwrap_or_default();
        let kept = self.kept_defaults(policy);
        let (hosts, from_kept_hosts) = if spec.hostnames.is_empty() {
            pick(&current.hostnames, kept.map(|k| &k.hostnames))
        } else {
            (spec.hostnames.iter().map(|h| h.0.clone()).collect(), false)
        };
        let hosts: Vec<String> = hosts.iter().map(|h| normalize_host(h)).collect();
        let (ports, from_kept_ports) = if spec.ports.is_empty() {
            pick(&current.ports, kept.map(|k| &k.ports))
        } else {
            (
                spec.ports.iter().map(super::convert::port_map).collect(),
                false,
            )
        };
        let trusted = self.settings.trusted_namespaces.contains(&policy.namespace);
        let accepted = match acceptance(policy, trusted, &hosts, &ports) {
            Some(problem) => {
                let accepted = verdict(false, problem.reason(), &problem.message());
                problems.push(problem);
                accepted
            }
            None => verdict(true, "Accepted", "policy accepted"),
        };
        // A missing target keeps the rule only when it blocks (fail-closed): with no gateway
        // the datapath refuses instead of letting connections go direct.
        let usable = accepted.ok && (!gateway.is_empty() || spec.fail_closed);
        let fail_closed = spec.fail_closed.then(|| {
            fail_closed_verdict(
                &resolved_refs,
                gateway,
                from_kept_hosts || from_kept_ports,
                accepted.ok,
            )
        });
        let uses_defaults = spec.hostnames.is_empty() || spec.ports.is_empty();
        let defaults = (uses_defaults
            && (!current.hostnames.is_empty() || !current.ports.is_empty()))
        .then_some(current);
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
        Evaluated {
            rule,
            outcome: PolicyOutcome {
                key: (policy.namespace.clone(), policy.name.clone()),
                uid: policy.uid.clone(),
                generation: policy.generation,
                accepted,
                resolved_refs,
                fail_closed,
                defaults,
                problems,
            },
            service: target.and_then(|t| t.service),
        }
    }

    /// The defaults last taken from the policy's target: this agent's memory, else the
    /// status (which outlives agent restarts).
    fn kept_defaults<'a>(&'a self, policy: &'a PolicyInfo) -> Option<&'a Defaults> {
        self.remembered
            .get(&(policy.namespace.clone(), policy.name.clone()))
            .or(policy.kept.as_ref())
    }

    fn target(&self, policy: &PolicyInfo) -> Option<Target> {
        let target = &policy.spec.target_ref;
        let key = (policy.namespace.clone(), target.name.clone());
        match (target.group.as_str(), target.kind.as_str()) {
            (GATEWAY_GROUP, "Gateway") => {
                let gateway = self.gateways.get(&key)?;
                let service = self.gateway_service(&policy.namespace, &target.name);
                // The Service's ClusterIP first: a load balancer address in the Gateway's
                // status would hairpin in-cluster traffic out and back.
                let address = match service {
                    Some(service) if !service.cluster_ips.is_empty() => {
                        Gateways::from_addresses(service.cluster_ips.iter().copied())
                    }
                    _ => Gateways::from_addresses(gateway.addresses.iter().copied()),
                };
                let mut defaults = Defaults::default();
                for listener in gateway.listeners.iter().filter(|l| l.usable) {
                    let port = PortMap {
                        port: listener.port,
                        gateway_port: listener.port,
                        protocol: protocol(&listener.protocol),
                    };
                    if !defaults.ports.contains(&port) {
                        defaults.ports.push(port);
                    }
                    if let Some(host) = &listener.hostname
                        && !defaults.hostnames.contains(host)
                    {
                        defaults.hostnames.push(host.clone());
                    }
                }
                Some(Target {
                    gateway: address,
                    service: service.map(|s| (s.namespace.clone(), s.name.clone())),
                    defaults,
                })
            }
            ("", "Service") => {
                let service = self.services.get(&key)?;
                let ports = service
                    .ports
                    .iter()
                    .map(|(port, name)| PortMap {
                        port: *port,
                        gateway_port: *port,
                        protocol: protocol(name),
                    })
                    .collect();
                Some(Target {
                    gateway: Gateways::from_addresses(service.cluster_ips.iter().copied()),
                    service: Some(key),
                    defaults: Defaults {
                        hostnames: Vec::new(),
                        ports,
                    },
                })
            }
            _ => None,
        }
    }

    /// The Service of a Gateway: Istio's (labelled with the Gateway's name, in its namespace)
    /// or Envoy Gateway's (labelled with its name and namespace, in a trusted namespace such as
    /// `envoy-gateway-system`, which a tenant cannot write to).
    pub(crate) fn gateway_service(&self, namespace: &str, name: &str) -> Option<&ServiceInfo> {
        fn label<'a>(s: &'a ServiceInfo, key: &str) -> Option<&'a str> {
            s.labels.get(key).map(String::as_str)
        }
        self.services
            .values()
            .find(|s| s.namespace == namespace && label(s, GATEWAY_NAME_LABEL) == Some(name))
            .or_else(|| {
                self.services.values().find(|s| {
                    label(s, ENVOY_GATEWAY_NAME_LABEL) == Some(name)
                        && label(s, ENVOY_GATEWAY_NAMESPACE_LABEL) == Some(namespace)
                        && (s.namespace == namespace
                            || self.settings.trusted_namespaces.contains(&s.namespace))
                })
            })
    }
}

/// Why a policy cannot be accepted, if it cannot: it selects across namespaces from an
/// untrusted one, names a hostname the datapath cannot match, asks for UDP, or has no
/// hostnames or ports (given or taken from the target).
fn acceptance(
    policy: &PolicyInfo,
    trusted: bool,
    hosts: &[String],
    ports: &[PortMap],
) -> Option<Problem> {
    if policy.spec.namespace_selector.is_some() && !trusted {
        Some(Problem::NamespaceNotTrusted(policy.namespace.clone()))
    } else if let Some(error) = hosts
        .iter()
        .find_map(|host| crate::config::validate_hostname(host).err())
    {
        Some(Problem::InvalidHostname(error))
    } else if ports.iter().any(|p| p.protocol == Protocol::Udp) {
        Some(Problem::UdpNotSupported)
    } else if hosts.is_empty() {
        Some(Problem::NoHostnames)
    } else if ports.is_empty() {
        Some(Problem::NoPorts)
    } else {
        None
    }
}

/// The target's current values, else the kept ones; and whether the kept ones were used.
fn pick<T: Clone>(current: &[T], kept: Option<&Vec<T>>) -> (Vec<T>, bool) {
    match kept {
        Some(kept) if current.is_empty() && !kept.is_empty() => (kept.clone(), true),
        _ => (current.to_vec(), false),
    }
}

fn fail_closed_verdict(
    resolved_refs: &Verdict,
    gateway: Gateways,
    kept: bool,
    accepted: bool,
) -> Verdict {
    let kept_note = if kept {
        "; hostnames and ports kept from the target's last defaults (status.defaults)"
    } else {
        ""
    };
    if !accepted {
        verdict(
            false,
            "NotAccepted",
            "the policy is not accepted, so nothing is refused for it",
        )
    } else if !resolved_refs.ok {
        verdict(
            true,
            &resolved_refs.reason,
            &format!(
                "{}: matching connections are refused{kept_note}",
                resolved_refs.message
            ),
        )
    } else if kept {
        verdict(
            true,
            "DefaultsKept",
            &format!("the target has no usable listeners now{kept_note}"),
        )
    } else if gateway.v4.is_none() || gateway.v6.is_none() {
        let (has, missing) = if gateway.v4.is_none() {
            ("IPv6", "IPv4")
        } else {
            ("IPv4", "IPv6")
        };
        let detail = if missing == "IPv6" {
            "IPv6 destinations reach it through its IPv4-mapped address from dual-stack sockets; IPV6_V6ONLY sockets are refused"
        } else {
            "IPv4 connections are refused"
        };
        verdict(
            false,
            "SingleFamilyGateway",
            &format!(
                "matching {has} connections are redirected; the gateway has no {missing} address: {detail}"
            ),
        )
    } else {
        verdict(
            false,
            "Redirecting",
            "matching connections are redirected (the gateway has both families)",
        )
    }
}

fn protocol(name: &str) -> Protocol {
    if name == "UDP" {
        Protocol::Udp
    } else {
        Protocol::Tcp
    }
}

pub(crate) fn verdict(ok: bool, reason: &str, message: &str) -> Verdict {
    Verdict {
        ok,
        reason: reason.to_owned(),
        message: message.to_owned(),
    }
}
#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
