//! Pure conversions from API objects to the index's plain data. Only the fields the index
//! needs are kept (no managedFields, no specs it does not read), which keeps memory small.

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{ResourceExt as _, api::DynamicObject, core::PartialObjectMeta};

use super::{
    crd::EgressRedirectPolicy,
    model::{
        ConditionState, EndpointSliceInfo, GatewayInfo, ListenerInfo, NamespaceInfo, ObjectKey,
        PodInfo, PolicyInfo, QosClass, ServiceInfo,
    },
};

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
    PodInfo {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
        qos,
        labels: labels_of(pod),
        finished: matches!(phase, Some("Succeeded" | "Failed")),
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
    }
}

/// A Gateway, read as a dynamic object: listeners from `spec.listeners`, addresses from
/// `status.addresses` of type `IPAddress` (the default type).
pub fn gateway(gateway: &DynamicObject) -> GatewayInfo {
    let listeners = gateway.data["spec"]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            Some(ListenerInfo {
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
    }
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
