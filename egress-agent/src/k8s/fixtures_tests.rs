//! Hand-built cluster objects shared by the index and policy tests.

use std::collections::BTreeMap;

use super::{
    crd::{EgressRedirectPolicySpec, GATEWAY_GROUP, Hostname, TargetRef},
    index::{GATEWAY_NAME_LABEL, Index, PodRef},
    model::{
        EndpointSliceInfo, GatewayInfo, ListenerInfo, NamespaceInfo, ObjectKey, PodInfo,
        PolicyInfo, QosClass, ServiceInfo,
    },
};
use crate::route::Gateways;

pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub(crate) fn key(ns: &str, name: &str) -> ObjectKey {
    (ns.to_owned(), name.to_owned())
}

pub(crate) fn pod(ns: &str, name: &str, pod_labels: &[(&str, &str)]) -> PodInfo {
    PodInfo {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        uid: format!("uid-{name}"),
        cgroup_uid: format!("uid-{name}"),
        qos: QosClass::Burstable,
        labels: labels(pod_labels),
        finished: false,
        container_ids: Vec::new(),
    }
}

pub(crate) fn add_pod(index: &mut Index, ns: &str, name: &str, pod_labels: &[(&str, &str)]) {
    index.pods.insert(key(ns, name), pod(ns, name, pod_labels));
}

pub(crate) fn add_namespace(index: &mut Index, name: &str, ns_labels: &[(&str, &str)]) {
    index.namespaces.insert(
        (String::new(), name.to_owned()),
        NamespaceInfo {
            name: name.to_owned(),
            labels: labels(ns_labels),
        },
    );
}

pub(crate) fn gateways(address: &str) -> Gateways {
    Gateways::from_addresses([address.parse::<std::net::IpAddr>().unwrap()])
}

/// The selection identity of a pod built by [`pod`].
pub(crate) fn uid(ns: &str, name: &str) -> PodRef {
    PodRef {
        uid: format!("uid-{name}"),
        key: key(ns, name),
    }
}

pub(crate) fn spec(kind: &str, name: &str) -> EgressRedirectPolicySpec {
    EgressRedirectPolicySpec {
        target_ref: TargetRef {
            group: if kind == "Gateway" {
                GATEWAY_GROUP.to_owned()
            } else {
                String::new()
            },
            kind: kind.to_owned(),
            name: name.to_owned(),
        },
        hostnames: Vec::new(),
        ports: Vec::new(),
        fail_closed: false,
        refuse_quic: None,
        workload_selector: None,
        namespace_selector: None,
    }
}

pub(crate) fn hostnames(names: &[&str]) -> Vec<Hostname> {
    names.iter().map(|n| Hostname((*n).to_owned())).collect()
}

pub(crate) fn policy(
    ns: &str,
    name: &str,
    created: &str,
    spec: EgressRedirectPolicySpec,
) -> PolicyInfo {
    PolicyInfo {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        uid: format!("uid-policy-{name}"),
        generation: 1,
        created: created.to_owned(),
        spec,
        conditions: Vec::new(),
        transitions: BTreeMap::new(),
        kept: None,
    }
}

pub(crate) fn add_policy(index: &mut Index, policy: PolicyInfo) {
    index
        .policies
        .insert(key(&policy.namespace, &policy.name), policy);
}

pub(crate) fn listener(name: &str, host: Option<&str>, port: u16, protocol: &str) -> ListenerInfo {
    ListenerInfo {
        name: name.to_owned(),
        hostname: host.map(str::to_owned),
        port,
        protocol: protocol.to_owned(),
        usable: true,
    }
}

pub(crate) fn service(
    ns: &str,
    name: &str,
    ip: &str,
    ports: &[u16],
    svc_labels: &[(&str, &str)],
) -> ServiceInfo {
    ServiceInfo {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        cluster_ips: if ip.is_empty() {
            Vec::new()
        } else {
            vec![ip.parse().unwrap()]
        },
        ports: ports.iter().map(|p| (*p, "TCP".to_owned())).collect(),
        labels: labels(svc_labels),
    }
}

pub(crate) fn add_service(index: &mut Index, service: ServiceInfo) {
    index
        .services
        .insert(key(&service.namespace, &service.name), service);
}

pub(crate) fn slice(ns: &str, service: &str, pods: &[&str]) -> EndpointSliceInfo {
    EndpointSliceInfo {
        namespace: ns.to_owned(),
        name: format!("{service}-abc"),
        service: service.to_owned(),
        pods: pods.iter().map(|p| (*p).to_owned()).collect(),
        addresses: vec!["10.244.0.9".parse().unwrap()],
    }
}

pub(crate) fn add_slice(index: &mut Index, slice: EndpointSliceInfo) {
    index
        .slices
        .insert(key(&slice.namespace, &slice.name), slice);
}

/// The Gateway API example: gateway-system/kuadrant-egressgateway for httpbin.org, its Istio
/// Service and one gateway pod behind it; gateway-system is trusted.
pub(crate) fn gateway_world() -> Index {
    let mut index = Index::default();
    index
        .settings
        .trusted_namespaces
        .insert("gateway-system".to_owned());
    index.gateways.insert(
        key("gateway-system", "kuadrant-egressgateway"),
        GatewayInfo {
            namespace: "gateway-system".into(),
            name: "kuadrant-egressgateway".into(),
            listeners: vec![
                listener("http", Some("httpbin.org"), 80, "HTTP"),
                listener("tls", Some("httpbin.org"), 443, "TLS"),
            ],
            addresses: Vec::new(),
        },
    );
    add_service(
        &mut index,
        service(
            "gateway-system",
            "kuadrant-egressgateway-istio",
            "10.96.12.34",
            &[80, 443],
            &[(GATEWAY_NAME_LABEL, "kuadrant-egressgateway")],
        ),
    );
    add_slice(
        &mut index,
        slice("gateway-system", "kuadrant-egressgateway-istio", &["gw-0"]),
    );
    add_pod(
        &mut index,
        "gateway-system",
        "gw-0",
        &[("app", "egressgateway")],
    );
    add_policy(
        &mut index,
        policy(
            "gateway-system",
            "httpbin",
            "2026-01-01T00:00:00Z",
            spec("Gateway", "kuadrant-egressgateway"),
        ),
    );
    index
}
