//! Pure conversions from API objects to the index's plain data. Only the fields the index
//! needs are kept (no managedFields, no specs it does not read), which keeps memory small.

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{ResourceExt as _, api::DynamicObject, core::PartialObjectMeta};

use super::{
    crd::{EgressRedirectPolicy, PolicyPort, PortProtocol},
    model::{
        ConditionState, Defaults, EndpointSliceInfo, GatewayInfo, ListenerInfo, NamespaceInfo,
        ObjectKey, PodInfo, PolicyInfo, QosClass, ServiceInfo,
    },
};
use crate::{intent::PortMap, route::Protocol};

/// On a static pod's mirror: the UID the kubelet gave the pod (and its cgroup).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Namespace and name of any object.
pub fn key_of<K: kube::Resource>(object: &K) -> ObjectKey {
    (object.namespace().unwrap_or_default(), object.name_any())
}

fn labels_of<K: kube::Resource>(object: &K) -> BTreeMap<String, String> {
    object.labels().clone()
}

/// A pod.
pub fn pod(pod: &Pod) -> PodInfo {
    let status = pod.status.as_ref();
    let qos = match status.and_then(|s| s.qos_class.as_deref()) {
        Some("Guaranteed") => QosClass::Guaranteed,
        Some("BestEffort") => QosClass::BestEffort,
        _ => QosClass::Burstable,
    };
    let phase = status.and_then(|s| s.phase.as_deref());
    let uid = pod.uid().unwrap_or_default();
    PodInfo {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        cgroup_uid: pod
            .annotations()
            .get(MIRROR_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| uid.clone()),
        uid,
        qos,
        labels: labels_of(pod),
        finished: matches!(phase, Some("Succeeded" | "Failed")),
        container_ids: status
            .into_iter()
            .flat_map(|s| {
                s.container_statuses
                    .iter()
                    .chain(&s.init_container_statuses)
                    .flatten()
            })
            .filter_map(|c| c.container_id.as_deref())
            .filter_map(super::cgroups::container_id_of_status)
            .collect(),
    }
}

/// A namespace (metadata only).
pub fn namespace(namespace: &PartialObjectMeta<Namespace>) -> NamespaceInfo {
    NamespaceInfo {
        name: namespace.name_any(),
        labels: labels_of(namespace),
    }
}

/// A policy.
pub fn policy(policy: &EgressRedirectPolicy) -> PolicyInfo {
    PolicyInfo {
        namespace: policy.namespace().unwrap_or_default(),
        name: policy.name_any(),
        uid: policy.uid().unwrap_or_default(),
        generation: policy.metadata.generation.unwrap_or(0),
        created: policy
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        spec: policy.spec.clone(),
        conditions: policy
            .status
            .iter()
            .flat_map(|s| s.conditions.iter())
            .map(|c| ConditionState {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                observed_generation: c.observed_generation.unwrap_or(0),
            })
            .collect(),
        transitions: policy
            .status
            .iter()
            .flat_map(|s| s.conditions.iter())
            .map(|c| (c.type_.clone(), c.last_transition_time.0.to_string()))
            .collect(),
        kept: policy
            .status
            .as_ref()
            .and_then(|s| s.defaults.as_ref())
            .map(|d| Defaults {
                hostnames: d.hostnames.clone(),
                ports: d.ports.iter().map(port_map).collect(),
            }),
    }
}

/// A policy's port as a rule's.
pub fn port_map(port: &PolicyPort) -> PortMap {
    PortMap {
        port: port.port,
        gateway_port: port.gateway_port.unwrap_or(port.port),
        protocol: match port.protocol {
            Some(PortProtocol::Udp) => Protocol::Udp,
            Some(PortProtocol::Tcp) | None => Protocol::Tcp,
        },
    }
}

/// A rule's port as a policy's (for the status).
pub fn policy_port(port: &PortMap) -> PolicyPort {
    PolicyPort {
        port: port.port,
        gateway_port: (port.gateway_port != port.port).then_some(port.gateway_port),
        protocol: (port.protocol == Protocol::Udp).then_some(PortProtocol::Udp),
    }
}

/// A Gateway, read as a dynamic object: listeners from `spec.listeners` (usable when
/// `status.listeners` says routes are attached or it is `Programmed`), addresses from
/// `status.addresses` of type `IPAddress` (the default type).
pub fn gateway(gateway: &DynamicObject) -> GatewayInfo {
    let statuses = gateway.data["status"]["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let usable = |name: &str| {
        statuses.iter().any(|s| {
            s["name"] == name
                && (s["attachedRoutes"].as_u64().is_some_and(|n| n > 0)
                    || s["conditions"].as_array().is_some_and(|conditions| {
                        conditions
                            .iter()
                            .any(|c| c["type"] == "Programmed" && c["status"] == "True")
                    }))
        })
    };
    let listeners = gateway.data["spec"]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let name = l["name"].as_str().unwrap_or_default().to_owned();
            Some(ListenerInfo {
                usable: usable(&name),
                name,
                hostname: l["hostname"].as_str().map(str::to_owned),
                port: u16::try_from(l["port"].as_u64()?).ok()?,
                protocol: l["protocol"].as_str().unwrap_or("HTTP").to_owned(),
            })
        })
        .collect();
    let addresses = gateway.data["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["type"].as_str().is_none_or(|t| t == "IPAddress"))
        .filter_map(|a| a["value"].as_str()?.parse::<IpAddr>().ok())
        .collect();
    GatewayInfo {
        namespace: gateway.namespace().unwrap_or_default(),
        name: gateway.name_any(),
        listeners,
        addresses,
    }
}

/// A Service.
pub fn service(service: &Service) -> ServiceInfo {
    let spec = service.spec.as_ref();
    let cluster_ips = spec
        .and_then(|s| s.cluster_ips.clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .collect();
    let ports = spec
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            Some((
                u16::try_from(p.port).ok()?,
                p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
            ))
        })
        .collect();
    ServiceInfo {
        namespace: service.namespace().unwrap_or_default(),
        name: service.name_any(),
        cluster_ips,
        ports,
        labels: labels_of(service),
    }
}

/// An EndpointSlice: its Service and the pods behind its endpoints.
pub fn endpoint_slice(slice: &EndpointSlice) -> EndpointSliceInfo {
    let namespace = slice.namespace().unwrap_or_default();
    let addresses = slice
        .endpoints
        .iter()
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .collect();
    let pods = slice
        .endpoints
        .iter()
        .filter_map(|e| e.target_ref.as_ref())
        .filter(|r| {
            r.kind.as_deref() == Some("Pod")
                && r.namespace.as_deref().is_none_or(|ns| ns == namespace)
        })
        .filter_map(|r| r.name.clone())
        .collect();
    EndpointSliceInfo {
        namespace,
        name: slice.name_any(),
        service: slice
            .labels()
            .get("kubernetes.io/service-name")
            .cloned()
            .unwrap_or_default(),
        pods,
        addresses,
    }
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
