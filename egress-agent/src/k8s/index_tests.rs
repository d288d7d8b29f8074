use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::*;
use crate::k8s::fixtures_tests::*;

#[test]
fn selection_by_pod_label_namespace_label_and_opt_out() {
    let mut index = gateway_world();
    add_namespace(&mut index, "team-a", &[(REDIRECT_LABEL, "true")]);
    add_namespace(&mut index, "team-b", &[]);
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
        add_pod(&mut index, ns, name, pod_labels);
    }
    let state = index.compute();
    for (ns, name, _, expected) in &cases {
        assert_eq!(
            state.selected.contains_key(&uid(ns, name)),
            *expected,
            "{name}"
        );
    }
    for (ns, name, pod_labels, _) in &cases {
        let mut finished = pod(ns, name, pod_labels);
        finished.finished = true;
        index.pods.insert(key(ns, name), finished);
    }
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
    add_policy(
        &mut index,
        policy("gateway-system", "httpbin", "2026-01-01T00:00:00Z", spec),
    );
    add_namespace(&mut index, "prod", &[("env", "prod")]);
    add_pod(&mut index, "prod", "curl", &[("app", "curl")]);
    add_pod(&mut index, "prod", "labelled", &[(REDIRECT_LABEL, "true")]);
    add_pod(&mut index, "dev", "curl-dev", &[("app", "curl")]);
    let selected: Vec<PodRef> = index.compute().selected.into_keys().collect();
    assert_eq!(selected, [uid("prod", "curl")]);
}

/// A tenant (namespace `tenant`, not trusted) with a labelled pod, and a labelled pod in
/// another namespace.
fn tenant_world() -> Index {
    let mut index = gateway_world();
    add_namespace(&mut index, "tenant", &[(REDIRECT_LABEL, "true")]);
    add_namespace(&mut index, "apps", &[(REDIRECT_LABEL, "true")]);
    add_pod(&mut index, "tenant", "tenant-app", &[]);
    add_pod(&mut index, "apps", "victim", &[]);
    add_service(
        &mut index,
        service("tenant", "tenant-gw", "10.96.7.7", &[443], &[]),
    );
    index
}

#[test]
fn a_tenants_policy_selects_only_in_its_own_namespace() {
    let mut index = tenant_world();
    let mut steer = spec("Service", "tenant-gw");
    steer.hostnames = hostnames(&["bank.example"]);
    add_policy(
        &mut index,
        policy("tenant", "steer", "2026-02-01T00:00:00Z", steer),
    );
    let state = index.compute();
    let steer_rule = state
        .rules
        .iter()
        .position(|r| r.owner.to_string() == "tenant/steer")
        .expect("accepted: it selects in its own namespace");
    assert!(
        state.selected[&uid("tenant", "tenant-app")].contains(&steer_rule),
        "its own pod"
    );
    assert!(
        !state.selected[&uid("apps", "victim")].contains(&steer_rule),
        "a labelled pod in another namespace is not steered"
    );
}

#[test]
fn a_tenants_namespace_selector_is_not_accepted() {
    let mut index = tenant_world();
    let mut steer = spec("Service", "tenant-gw");
    steer.hostnames = hostnames(&["bank.example"]);
    steer.namespace_selector = Some(LabelSelector::default());
    add_policy(
        &mut index,
        policy("tenant", "steer", "2026-02-01T00:00:00Z", steer),
    );
    let state = index.compute();
    let outcome = state
        .outcomes
        .iter()
        .find(|o| o.key == key("tenant", "steer"))
        .expect("outcome");
    assert!(!outcome.accepted.ok);
    assert_eq!(outcome.accepted.reason, "NamespaceNotTrusted");
    assert!(
        state
            .rules
            .iter()
            .all(|r| r.owner.to_string() != "tenant/steer"),
        "no rule from a policy that is not accepted"
    );

    // The same policy from a trusted namespace is accepted and selects across namespaces.
    index.settings.trusted_namespaces.insert("tenant".into());
    let state = index.compute();
    let rule = state
        .rules
        .iter()
        .position(|r| r.owner.to_string() == "tenant/steer")
        .expect("accepted when trusted");
    assert!(state.selected[&uid("apps", "victim")].contains(&rule));
}

#[test]
fn a_tenant_cannot_exempt_its_pod_from_the_platforms_policy() {
    let mut index = tenant_world();
    // The tenant's Service lists the tenant's own pod as its endpoint, and a tenant policy
    // targets it.
    add_slice(&mut index, slice("tenant", "tenant-gw", &["tenant-app"]));
    let mut escape = spec("Service", "tenant-gw");
    escape.hostnames = hostnames(&["httpbin.org"]);
    add_policy(
        &mut index,
        policy("tenant", "escape", "2026-02-01T00:00:00Z", escape),
    );
    let state = index.compute();
    let platform = state
        .rules
        .iter()
        .position(|r| r.owner.to_string() == "gateway-system/httpbin")
        .expect("platform rule");
    let rules = &state.selected[&uid("tenant", "tenant-app")];
    assert!(
        rules.contains(&platform),
        "still redirected by the platform's policy: {rules:?}"
    );
    assert!(
        !state.exempt.contains(&uid("tenant", "tenant-app")),
        "not exempt from anything else"
    );
}

#[test]
fn only_endpoint_backends_are_exempt_and_labels_cannot_forge_it() {
    let mut index = gateway_world();
    add_namespace(&mut index, "gateway-system", &[(REDIRECT_LABEL, "true")]);
    // A workload copying the gateway pod's labels, in the gateway's namespace.
    add_pod(
        &mut index,
        "gateway-system",
        "impostor",
        &[("app", "egressgateway")],
    );
    let state = index.compute();
    let gw = uid("gateway-system", "gw-0");
    let impostor = uid("gateway-system", "impostor");
    assert!(state.exempt.contains(&gw), "endpoint backend exempt");
    assert!(
        !state.selected.contains_key(&gw),
        "exempt wins over the namespace label"
    );
    assert!(
        state.selected.contains_key(&impostor),
        "copied labels do not exempt"
    );
    assert!(!state.exempt.contains(&impostor));
}

#[test]
fn envoy_gateway_proxies_in_a_trusted_namespace_are_exempt() {
    let mut index = gateway_world();
    let mut envoy = index
        .services
        .get(&key("gateway-system", "kuadrant-egressgateway-istio"))
        .cloned()
        .expect("istio service");
    index
        .services
        .remove(0, &key("gateway-system", "kuadrant-egressgateway-istio"));
    envoy.namespace = "envoy-gateway-system".into();
    envoy.name = "envoy-gateway-system-kuadrant-egressgateway-abc".into();
    envoy.labels = labels(&[
        (ENVOY_GATEWAY_NAME_LABEL, "kuadrant-egressgateway"),
        (ENVOY_GATEWAY_NAMESPACE_LABEL, "gateway-system"),
    ]);
    add_service(&mut index, envoy.clone());
    add_slice(
        &mut index,
        slice("envoy-gateway-system", &envoy.name, &["envoy-0"]),
    );
    add_pod(&mut index, "envoy-gateway-system", "envoy-0", &[]);
    add_namespace(
        &mut index,
        "envoy-gateway-system",
        &[(REDIRECT_LABEL, "true")],
    );
    let proxy = uid("envoy-gateway-system", "envoy-0");

    let state = index.compute();
    assert!(
        state.rules.is_empty(),
        "an untrusted namespace's labels are not believed: no gateway address"
    );
    assert!(!state.exempt.contains(&proxy));

    index
        .settings
        .trusted_namespaces
        .insert("envoy-gateway-system".into());
    let state = index.compute();
    assert_eq!(state.rules[0].gateways, gateways("10.96.12.34"));
    assert!(state.exempt.contains(&proxy), "the proxy pod goes direct");
    assert!(!state.selected.contains_key(&proxy));
}

#[test]
fn each_pod_gets_the_rules_of_the_policies_that_select_it() {
    let mut index = gateway_world();
    add_namespace(&mut index, "apps", &[(REDIRECT_LABEL, "true")]);
    add_pod(&mut index, "apps", "web", &[("app", "web")]);
    add_pod(&mut index, "apps", "batch", &[("app", "batch")]);
    let mut only_batch = spec("Service", "kuadrant-egressgateway-istio");
    only_batch.hostnames = hostnames(&["example.com"]);
    only_batch.workload_selector = Some(LabelSelector {
        match_labels: Some(labels(&[("app", "batch")])),
        ..Default::default()
    });
    add_policy(
        &mut index,
        policy(
            "gateway-system",
            "batch",
            "2026-02-01T00:00:00Z",
            only_batch,
        ),
    );
    let mut also_default = spec("Service", "kuadrant-egressgateway-istio");
    also_default.hostnames = hostnames(&["example.org"]);
    add_policy(
        &mut index,
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
        ],
        "creation order, not name order"
    );
    assert_eq!(
        state.selected[&uid("apps", "web")],
        BTreeSet::from([0, 2]),
        "web: only the default-selector policies"
    );
    assert_eq!(
        state.selected[&uid("apps", "batch")],
        BTreeSet::from([0, 1, 2]),
        "batch: all three"
    );
}

#[test]
fn references_name_what_the_policies_need_and_the_cluster_dns() {
    let mut index = gateway_world();
    index.settings.cluster_dns = Some(key("kube-system", "kube-dns"));
    let mut direct = spec("Service", "istio-egressgateway");
    direct.hostnames = hostnames(&["example.com"]);
    add_policy(&mut index, policy("istio-system", "wiki", "t", direct));
    let refs = index.references();
    assert_eq!(
        refs.services,
        BTreeSet::from([
            key("istio-system", "istio-egressgateway"),
            key("kube-system", "kube-dns")
        ])
    );
    assert_eq!(
        refs.slices,
        BTreeSet::from([
            key("gateway-system", "kuadrant-egressgateway-istio"),
            key("istio-system", "istio-egressgateway"),
            key("kube-system", "kube-dns")
        ])
    );
}

#[test]
fn the_cluster_dns_and_its_endpoints_are_trusted_resolvers() {
    let mut index = gateway_world();
    index.settings.cluster_dns = Some(key("kube-system", "kube-dns"));
    add_service(
        &mut index,
        service("kube-system", "kube-dns", "10.96.0.10", &[53], &[]),
    );
    let mut endpoints = slice("kube-system", "kube-dns", &["coredns-0"]);
    endpoints.addresses = vec!["10.244.1.5".parse().unwrap(), "10.244.2.6".parse().unwrap()];
    add_slice(&mut index, endpoints);
    let trusted: Vec<String> = index
        .compute()
        .trusted_resolvers
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(trusted, ["10.96.0.10:53", "10.244.1.5:53", "10.244.2.6:53"]);
}

#[test]
fn a_namespace_without_local_pods_costs_no_recompute() {
    let mut index = gateway_world();
    add_pod(&mut index, "apps", "web", &[]);
    assert!(index.has_local_pods("apps"));
    assert!(!index.has_local_pods("elsewhere"));
}
