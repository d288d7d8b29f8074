use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::*;
use crate::k8s::{
    crd::{EgressRedirectPolicySpec, Hostname, PolicyPort, TargetRef},
    model::ListenerInfo,
};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn key(ns: &str, name: &str) -> ObjectKey {
    (ns.to_owned(), name.to_owned())
}

fn pod(ns: &str, name: &str, pod_labels: &[(&str, &str)]) -> PodInfo {
    PodInfo {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        uid: format!("uid-{name}"),
        qos: QosClass::Burstable,
        labels: labels(pod_labels),
        finished: false,
    }
}

fn gateways(address: &str) -> Gateways {
    Gateways::from_addresses([address.parse::<std::net::IpAddr>().unwrap()])
}

fn uid(name: &str) -> PodRef {
    PodRef {
        uid: format!("uid-{name}"),
        qos: QosClass::Burstable,
    }
}

fn spec(kind: &str, name: &str) -> EgressRedirectPolicySpec {
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

fn policy(ns: &str, name: &str, created: &str, spec: EgressRedirectPolicySpec) -> PolicyInfo {
    PolicyInfo {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        generation: 1,
        created: created.to_owned(),
        spec,
        conditions: Vec::new(),
        transitions: BTreeMap::new(),
    }
}

/// The Gateway API example: gateway-system/kuadrant-egressgateway for httpbin.org, its Istio
/// Service and one gateway pod behind it.
fn gateway_world() -> Index {
    let mut index = Index::default();
    index.gateways.insert(
        key("gateway-system", "kuadrant-egressgateway"),
        GatewayInfo {
            namespace: "gateway-system".into(),
            name: "kuadrant-egressgateway".into(),
            listeners: vec![
                ListenerInfo {
                    hostname: Some("httpbin.org".into()),
                    port: 80,
                    protocol: "HTTP".into(),
                },
                ListenerInfo {
                    hostname: Some("httpbin.org".into()),
                    port: 443,
                    protocol: "TLS".into(),
                },
            ],
            addresses: Vec::new(),
        },
    );
    index.services.insert(
        key("gateway-system", "kuadrant-egressgateway-istio"),
        ServiceInfo {
            namespace: "gateway-system".into(),
            name: "kuadrant-egressgateway-istio".into(),
            cluster_ips: vec!["10.96.12.34".parse().unwrap()],
            ports: vec![(80, "TCP".into()), (443, "TCP".into())],
            labels: labels(&[(GATEWAY_NAME_LABEL, "kuadrant-egressgateway")]),
        },
    );
    index.slices.insert(
        key("gateway-system", "kuadrant-egressgateway-istio-abc"),
        EndpointSliceInfo {
            namespace: "gateway-system".into(),
            name: "kuadrant-egressgateway-istio-abc".into(),
            service: "kuadrant-egressgateway-istio".into(),
            pods: vec!["gw-0".into()],
        },
    );
    index.pods.insert(
        key("gateway-system", "gw-0"),
        pod("gateway-system", "gw-0", &[("app", "egressgateway")]),
    );
    index.policies.insert(
        key("gateway-system", "httpbin"),
        policy(
            "gateway-system",
            "httpbin",
            "2026-01-01T00:00:00Z",
            spec("Gateway", "kuadrant-egressgateway"),
        ),
    );
    index
}

#[test]
fn gateway_defaults_come_from_listeners_and_the_istio_service() {
    let state = gateway_world().compute();
    let rule = &state.rules[0];
    assert_eq!(rule.owner.to_string(), "gateway-system/httpbin");
    assert_eq!(
        rule.gateways,
        gateways("10.96.12.34"),
        "falls back to the Service's ClusterIP"
    );
    assert_eq!(rule.hosts, ["httpbin.org"]);
    let ports: Vec<(u16, u16)> = rule
        .ports
        .iter()
        .map(|p| (p.port, p.gateway_port))
        .collect();
    assert_eq!(
        ports,
        [(80, 80), (443, 443)],
        "HTTP 80->80, TLS 443->443 passthrough"
    );
    assert!(
        state.outcomes[0].accepted.ok && state.outcomes[0].resolved_refs.ok,
        "{:?}",
        state.outcomes[0]
    );
}

#[test]
fn gateway_status_address_wins_over_the_service() {
    let mut index = gateway_world();
    index
        .gateways
        .values_mut()
        .for_each(|g| g.addresses = vec!["10.96.99.1".parse().unwrap()]);
    assert_eq!(index.compute().rules[0].gateways, gateways("10.96.99.1"));
}

#[test]
fn selection_by_pod_label_namespace_label_and_opt_out() {
    let mut index = gateway_world();
    index.namespaces.insert(
        "team-a".into(),
        NamespaceInfo {
            name: "team-a".into(),
            labels: labels(&[(REDIRECT_LABEL, "true")]),
        },
    );
    index.namespaces.insert(
        "team-b".into(),
        NamespaceInfo {
            name: "team-b".into(),
            labels: BTreeMap::new(),
        },
    );
    let cases = [
        ("team-a", "in-labelled-ns", vec![], true),
        (
            "team-a",
            "opted-out",
            vec![(REDIRECT_LABEL, "false")],
            false,
        ),
        (
            "team-b",
            "labelled-pod",
            vec![(REDIRECT_LABEL, "true")],
            true,
        ),
        ("team-b", "plain", vec![], false),
    ];
    for (ns, name, pod_labels, _) in &cases {
        index.pods.insert(key(ns, name), pod(ns, name, pod_labels));
    }
    let state = index.compute();
    for (_, name, _, expected) in cases {
        assert_eq!(state.selected.contains_key(&uid(name)), expected, "{name}");
    }
    index.pods.values_mut().for_each(|p| p.finished = true);
    assert!(
        index.compute().selected.is_empty(),
        "finished pods are not selected"
    );
}

#[test]
fn explicit_selectors_replace_the_default_label() {
    let mut index = gateway_world();
    let mut spec = spec("Gateway", "kuadrant-egressgateway");
    spec.workload_selector = Some(LabelSelector {
        match_labels: Some(labels(&[("app", "curl")])),
        ..Default::default()
    });
    spec.namespace_selector = Some(LabelSelector {
        match_labels: Some(labels(&[("env", "prod")])),
        ..Default::default()
    });
    index.policies.insert(
        key("gateway-system", "httpbin"),
        policy("gateway-system", "httpbin", "2026-01-01T00:00:00Z", spec),
    );
    index.namespaces.insert(
        "prod".into(),
        NamespaceInfo {
            name: "prod".into(),
            labels: labels(&[("env", "prod")]),
        },
    );
    index
        .pods
        .insert(key("prod", "curl"), pod("prod", "curl", &[("app", "curl")]));
    index.pods.insert(
        key("prod", "labelled"),
        pod("prod", "labelled", &[(REDIRECT_LABEL, "true")]),
    );
    index.pods.insert(
        key("dev", "curl-dev"),
        pod("dev", "curl-dev", &[("app", "curl")]),
    );
    let selected: Vec<PodRef> = index.compute().selected.into_keys().collect();
    assert_eq!(selected, [uid("curl")]);
}

#[test]
fn only_endpoint_backends_are_exempt_and_labels_cannot_forge_it() {
    let mut index = gateway_world();
    index.namespaces.insert(
        "gateway-system".into(),
        NamespaceInfo {
            name: "gateway-system".into(),
            labels: labels(&[(REDIRECT_LABEL, "true")]),
        },
    );
    // A workload copying the gateway pod's labels, in the gateway's namespace.
    index.pods.insert(
        key("gateway-system", "impostor"),
        pod("gateway-system", "impostor", &[("app", "egressgateway")]),
    );
    let state = index.compute();
    assert!(
        state.exempt.contains(&uid("gw-0")),
        "endpoint backend exempt"
    );
    assert!(
        !state.selected.contains_key(&uid("gw-0")),
        "exempt wins over the namespace label"
    );
    assert!(
        state.selected.contains_key(&uid("impostor")),
        "copied labels do not exempt"
    );
    assert!(!state.exempt.contains(&uid("impostor")));
}

#[test]
fn service_targets_take_the_cluster_ip_and_service_ports() {
    let mut index = Index::default();
    index.services.insert(
        key("istio-system", "istio-egressgateway"),
        ServiceInfo {
            namespace: "istio-system".into(),
            name: "istio-egressgateway".into(),
            cluster_ips: vec!["10.96.0.50".parse().unwrap()],
            ports: vec![(443, "TCP".into())],
            labels: BTreeMap::new(),
        },
    );
    let mut spec = spec("Service", "istio-egressgateway");
    spec.hostnames = vec![Hostname("www.wikipedia.org".into())];
    index.policies.insert(
        key("istio-system", "wiki"),
        policy("istio-system", "wiki", "2026-01-01T00:00:00Z", spec.clone()),
    );
    let rule = &index.compute().rules[0];
    assert_eq!(
        (
            rule.gateways,
            rule.ports[0].port,
            rule.ports[0].gateway_port
        ),
        (gateways("10.96.0.50"), 443, 443)
    );

    spec.hostnames.clear();
    index.policies.insert(
        key("istio-system", "wiki"),
        policy("istio-system", "wiki", "2026-01-01T00:00:00Z", spec),
    );
    let state = index.compute();
    assert!(state.rules.is_empty(), "a Service target needs hostnames");
    assert_eq!(state.outcomes[0].accepted.reason, "NoHostnames");
}

#[test]
fn missing_targets_and_addresses_are_reported_and_block_only_when_fail_closed() {
    let mut index = Index::default();
    let mut spec = spec("Service", "absent");
    spec.hostnames = vec![Hostname("example.com".into())];
    spec.ports = vec![PolicyPort {
        port: 443,
        gateway_port: None,
        protocol: None,
    }];
    index
        .policies
        .insert(key("ns", "p"), policy("ns", "p", "t", spec.clone()));
    let state = index.compute();
    assert!(
        state.rules.is_empty(),
        "fail-open: no rule, traffic goes direct"
    );
    assert_eq!(
        state.outcomes[0].problems,
        [Problem::TargetNotFound("Service/ns/absent".into())]
    );
    assert_eq!(state.outcomes[0].resolved_refs.reason, "TargetNotFound");

    spec.fail_closed = true;
    index
        .policies
        .insert(key("ns", "p"), policy("ns", "p", "t", spec));
    let rule = &index.compute().rules[0];
    assert!(
        rule.gateways.is_empty(),
        "fail-closed: the rule stays, without a gateway, so connections are refused"
    );

    let mut index = gateway_world();
    index.services.clear();
    let state = index.compute();
    assert_eq!(
        state.outcomes[0].problems,
        [Problem::NoGatewayAddress(
            "Gateway/gateway-system/kuadrant-egressgateway".into()
        )]
    );
    assert!(state.rules.is_empty());
}

#[test]
fn wildcards_are_rules_hostnames_like_any_other() {
    let mut index = gateway_world();
    let mut spec = spec("Gateway", "kuadrant-egressgateway");
    spec.hostnames = vec![
        Hostname("*.httpbin.org".into()),
        Hostname("httpbin.org".into()),
    ];
    index.policies.insert(
        key("gateway-system", "httpbin"),
        policy("gateway-system", "httpbin", "t", spec),
    );
    let state = index.compute();
    assert_eq!(state.rules[0].hosts, ["*.httpbin.org", "httpbin.org"]);
    assert!(state.outcomes[0].problems.is_empty());
    assert!(state.outcomes[0].accepted.ok);
}

#[test]
fn the_oldest_policy_comes_first_so_it_wins_conflicts() {
    let mut index = gateway_world();
    let mut newer = spec("Service", "kuadrant-egressgateway-istio");
    newer.hostnames = vec![Hostname("httpbin.org".into())];
    index.policies.insert(
        key("gateway-system", "a-newer"),
        policy("gateway-system", "a-newer", "2026-06-01T00:00:00Z", newer),
    );
    let names: Vec<String> = index
        .compute()
        .rules
        .iter()
        .map(|r| r.owner.to_string())
        .collect();
    assert_eq!(
        names,
        ["gateway-system/httpbin", "gateway-system/a-newer"],
        "creation order, not name order"
    );
}

#[test]
fn each_pod_gets_the_rules_of_the_policies_that_select_it() {
    let mut index = gateway_world();
    index.namespaces.insert(
        "apps".into(),
        NamespaceInfo {
            name: "apps".into(),
            labels: labels(&[(REDIRECT_LABEL, "true")]),
        },
    );
    index
        .pods
        .insert(key("apps", "web"), pod("apps", "web", &[("app", "web")]));
    index.pods.insert(
        key("apps", "batch"),
        pod("apps", "batch", &[("app", "batch")]),
    );
    let mut only_batch = spec("Service", "kuadrant-egressgateway-istio");
    only_batch.hostnames = vec![Hostname("example.com".into())];
    only_batch.workload_selector = Some(LabelSelector {
        match_labels: Some(labels(&[("app", "batch")])),
        ..Default::default()
    });
    index.policies.insert(
        key("gateway-system", "batch"),
        policy(
            "gateway-system",
            "batch",
            "2026-02-01T00:00:00Z",
            only_batch,
        ),
    );
    let mut also_default = spec("Service", "kuadrant-egressgateway-istio");
    also_default.hostnames = vec![Hostname("example.org".into())];
    index.policies.insert(
        key("gateway-system", "default2"),
        policy(
            "gateway-system",
            "default2",
            "2026-03-01T00:00:00Z",
            also_default,
        ),
    );
    let state = index.compute();
    let names: Vec<String> = state.rules.iter().map(|r| r.owner.to_string()).collect();
    assert_eq!(
        names,
        [
            "gateway-system/httpbin",
            "gateway-system/batch",
            "gateway-system/default2"
        ]
    );
    assert_eq!(
        state.selected[&uid("web")],
        BTreeSet::from([0, 2]),
        "web: only the default-selector policies"
    );
    assert_eq!(
        state.selected[&uid("batch")],
        BTreeSet::from([0, 1, 2]),
        "batch: all three"
    );
}

#[test]
fn a_gateway_without_an_istio_labelled_service_is_exempt_through_its_address() {
    let mut index = gateway_world();
    index
        .gateways
        .values_mut()
        .for_each(|g| g.addresses = vec!["10.96.12.34".parse().unwrap()]);
    index.services.values_mut().for_each(|s| s.labels.clear());
    let state = index.compute();
    assert_eq!(state.rules[0].gateways, gateways("10.96.12.34"));
    assert!(
        state.exempt.contains(&uid("gw-0")),
        "backends of the Service holding the Gateway's address"
    );
}
