use super::*;
use crate::intent::PortMap;
use crate::k8s::{
    crd::PolicyPort,
    fixtures_tests::*,
    model::{Defaults, GatewayInfo},
};

fn ports(rule: &RuleIntent) -> Vec<(u16, u16)> {
    rule.ports
        .iter()
        .map(|p| (p.port, p.gateway_port))
        .collect()
}

fn set_gateway(index: &mut Index, update: impl FnOnce(&mut GatewayInfo)) {
    let key = key("gateway-system", "kuadrant-egressgateway");
    let mut gateway = index.gateways.get(&key).cloned().expect("gateway");
    update(&mut gateway);
    index.gateways.insert(key, gateway);
}

#[test]
fn gateway_defaults_come_from_listeners_and_the_istio_service() {
    let state = gateway_world().compute();
    let rule = &state.rules[0];
    assert_eq!(rule.owner.to_string(), "gateway-system/httpbin");
    assert_eq!(rule.gateways, gateways("10.96.12.34"));
    assert_eq!(rule.hosts, ["httpbin.org"]);
    assert_eq!(
        ports(rule),
        [(80, 80), (443, 443)],
        "HTTP and TLS passthrough"
    );
    let outcome = &state.outcomes[0];
    assert!(
        outcome.accepted.ok && outcome.resolved_refs.ok,
        "{outcome:?}"
    );
    assert_eq!(
        outcome.defaults,
        Some(Defaults {
            hostnames: vec!["httpbin.org".into()],
            ports: rule.ports.clone()
        }),
        "recorded for the status"
    );
    assert_eq!(
        outcome.fail_closed, None,
        "only fail-closed policies get the condition"
    );
}

#[test]
fn the_service_cluster_ip_wins_over_a_load_balancer_address() {
    let mut index = gateway_world();
    set_gateway(&mut index, |g| {
        g.addresses = vec!["203.0.113.9".parse().unwrap()];
    });
    assert_eq!(index.compute().rules[0].gateways, gateways("10.96.12.34"));
    index
        .services
        .remove(0, &key("gateway-system", "kuadrant-egressgateway-istio"));
    assert_eq!(
        index.compute().rules[0].gateways,
        gateways("203.0.113.9"),
        "the status address when there is no Service"
    );
}

#[test]
fn only_usable_listeners_give_defaults() {
    let mut index = gateway_world();
    set_gateway(&mut index, |g| {
        g.listeners[1].usable = false;
        g.listeners
            .push(listener("other", Some("other.example"), 8443, "TLS"));
        g.listeners[2].usable = false;
    });
    let rule = &index.compute().rules[0];
    assert_eq!(
        ports(rule),
        [(80, 80)],
        "the TLS listener has no route and is not Programmed"
    );
    assert_eq!(rule.hosts, ["httpbin.org"]);
}

#[test]
fn service_targets_take_the_cluster_ip_and_service_ports() {
    let mut index = Index::default();
    add_service(
        &mut index,
        service(
            "istio-system",
            "istio-egressgateway",
            "10.96.0.50",
            &[443],
            &[],
        ),
    );
    let mut spec = spec("Service", "istio-egressgateway");
    spec.hostnames = hostnames(&["www.wikipedia.org"]);
    add_policy(
        &mut index,
        policy("istio-system", "wiki", "t", spec.clone()),
    );
    let rule = &index.compute().rules[0];
    assert_eq!(
        (rule.gateways, ports(rule)),
        (gateways("10.96.0.50"), vec![(443, 443)])
    );
    spec.hostnames.clear();
    add_policy(&mut index, policy("istio-system", "wiki", "t", spec));
    let state = index.compute();
    assert!(state.rules.is_empty(), "a Service target needs hostnames");
    assert_eq!(state.outcomes[0].accepted.reason, "NoHostnames");
}

fn fail_closed_spec(target: &str) -> crate::k8s::crd::EgressRedirectPolicySpec {
    let mut spec = spec("Service", target);
    spec.hostnames = hostnames(&["example.com"]);
    spec.ports = vec![PolicyPort {
        port: 443,
        gateway_port: None,
        protocol: None,
    }];
    spec
}

#[test]
fn a_missing_target_refuses_only_when_fail_closed() {
    let mut index = Index::default();
    let mut spec = fail_closed_spec("absent");
    spec.fail_closed = false;
    add_policy(&mut index, policy("ns", "p", "t", spec.clone()));
    let state = index.compute();
    assert!(
        state.rules.is_empty(),
        "fail-open: no rule, traffic goes direct"
    );
    assert_eq!(
        state.outcomes[0].problems,
        [Problem::TargetNotFound("Service/ns/absent".into())]
    );
    spec.fail_closed = true;
    add_policy(&mut index, policy("ns", "p", "t", spec));
    let state = index.compute();
    assert!(
        state.rules[0].gateways.is_empty(),
        "the rule stays, without a gateway"
    );
    let condition = state.outcomes[0].fail_closed.clone().expect("FailClosed");
    assert!(condition.ok);
    assert_eq!(condition.reason, "TargetNotFound");
}

#[test]
fn a_service_without_a_cluster_ip_refuses() {
    let mut index = Index::default();
    add_service(&mut index, service("ns", "headless", "", &[443], &[]));
    let mut spec = fail_closed_spec("headless");
    spec.fail_closed = true;
    add_policy(&mut index, policy("ns", "p", "t", spec));
    let state = index.compute();
    assert!(state.rules[0].gateways.is_empty());
    let condition = state.outcomes[0].fail_closed.clone().expect("FailClosed");
    assert_eq!(
        (condition.ok, condition.reason.as_str()),
        (true, "NoGatewayAddress")
    );
}

#[test]
fn a_deleted_gateway_keeps_its_last_defaults_and_refuses_them() {
    let mut index = gateway_world();
    let mut spec = spec("Gateway", "kuadrant-egressgateway");
    spec.fail_closed = true;
    add_policy(
        &mut index,
        policy("gateway-system", "httpbin", "2026-01-01T00:00:00Z", spec),
    );
    let state = index.compute();
    index.remember(&state);
    let before = state.rules[0].clone();
    index
        .gateways
        .remove(0, &key("gateway-system", "kuadrant-egressgateway"));
    let state = index.compute();
    let rule = &state.rules[0];
    assert_eq!(
        (rule.hosts.clone(), rule.ports.clone()),
        (before.hosts, before.ports),
        "hostnames and ports kept"
    );
    assert!(rule.gateways.is_empty(), "and refused");
    let condition = state.outcomes[0].fail_closed.clone().expect("FailClosed");
    assert!(
        condition.ok && condition.message.contains("kept"),
        "{condition:?}"
    );

    // After a restart the memory is gone; the status still has them.
    let mut restarted = index.clone();
    restarted.remembered.clear();
    let key = key("gateway-system", "httpbin");
    let mut with_status = restarted.policies.get(&key).cloned().expect("policy");
    with_status.kept = Some(Defaults {
        hostnames: vec!["httpbin.org".into()],
        ports: before_ports(),
    });
    restarted.policies.insert(key, with_status);
    assert_eq!(restarted.compute().rules[0].hosts, ["httpbin.org"]);
}

fn before_ports() -> Vec<PortMap> {
    gateway_world().compute().rules[0].ports.clone()
}

#[test]
fn a_single_family_gateway_says_which_family_is_refused() {
    let mut index = gateway_world();
    let mut spec = spec("Gateway", "kuadrant-egressgateway");
    spec.fail_closed = true;
    add_policy(&mut index, policy("gateway-system", "httpbin", "t", spec));
    let condition = index.compute().outcomes[0]
        .fail_closed
        .clone()
        .expect("FailClosed");
    assert_eq!(condition.reason, "SingleFamilyGateway");
    assert!(
        condition
            .message
            .contains("IPV6_V6ONLY sockets are refused"),
        "{condition:?}"
    );
}

#[test]
fn wildcards_are_rules_hostnames_like_any_other() {
    let mut index = gateway_world();
    let mut spec = spec("Gateway", "kuadrant-egressgateway");
    spec.hostnames = hostnames(&["*.httpbin.org", "httpbin.org"]);
    add_policy(&mut index, policy("gateway-system", "httpbin", "t", spec));
    let state = index.compute();
    assert_eq!(state.rules[0].hosts, ["*.httpbin.org", "httpbin.org"]);
    assert!(state.outcomes[0].problems.is_empty());
}

#[test]
fn a_single_label_wildcard_and_udp_ports_are_not_accepted() {
    let mut index = gateway_world();
    let mut wide = spec("Gateway", "kuadrant-egressgateway");
    wide.hostnames = hostnames(&["*.com"]);
    add_policy(&mut index, policy("gateway-system", "httpbin", "t", wide));
    let state = index.compute();
    assert_eq!(state.outcomes[0].accepted.reason, "InvalidHostname");
    assert!(state.rules.is_empty());

    let mut udp = fail_closed_spec("kuadrant-egressgateway-istio");
    udp.ports[0].protocol = Some(crate::k8s::crd::PortProtocol::Udp);
    add_policy(&mut index, policy("gateway-system", "httpbin", "t", udp));
    let state = index.compute();
    assert_eq!(state.outcomes[0].accepted.reason, "UDPNotSupported");
}
