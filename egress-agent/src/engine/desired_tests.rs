use std::net::IpAddr;

use super::*;
use crate::{
    intent::{PortMap, Selection},
    route::Gateways,
};

fn owner(name: &str) -> RuleOwner {
    RuleOwner::File(name.to_owned())
}

fn port(port: u16, gateway_port: u16, protocol: Protocol) -> PortMap {
    PortMap {
        port,
        gateway_port,
        protocol,
    }
}

fn rule(name: &str, gateway: Option<&str>, addresses: &[&str], hosts: &[&str]) -> RuleIntent {
    RuleIntent {
        owner: owner(name),
        gateways: Gateways::from_addresses(gateway.map(|g| g.parse::<IpAddr>().unwrap())),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        addresses: addresses
            .iter()
            .map(|a| {
                a.parse::<IpNet>()
                    .or_else(|_| a.parse::<IpAddr>().map(IpNet::from))
                    .unwrap_or_else(|err| panic!("test address {a}: {err}"))
            })
            .collect(),
        fail_closed: false,
        refuse_quic: false,
        ports: vec![port(443, 8443, Protocol::Tcp)],
    }
}

/// An intent with `rules`, each cgroup selected by the given rule indices.
fn intent(rules: Vec<RuleIntent>, selected: &[(u64, &[usize])]) -> Intent {
    Intent {
        rules,
        selected: selected
            .iter()
            .map(|(cgroup, rules)| Selection {
                cgroup: *cgroup,
                rules: rules.iter().copied().collect(),
            })
            .collect(),
        ..Intent::default()
    }
}

fn resolved(entries: &[(&str, &[&str])]) -> Facts {
    Facts {
        resolved: entries
            .iter()
            .map(|(host, addrs)| {
                let addrs = addrs.iter().map(|a| (a.parse().unwrap(), 1_000)).collect();
                ((*host).to_owned(), addrs)
            })
            .collect(),
        servers: vec!["127.0.0.1:53".parse().unwrap()],
    }
}

fn run(intent: &Intent, facts: &Facts) -> Desired {
    compute(intent, facts, &mut IdSpace::default(), 42).expect("ids")
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The targets of the class of `cgroup` for the set of `addr` (or prefix), by (proto, port).
fn targets_for(desired: &Desired, cgroup: u64, set: u32) -> BTreeMap<(Protocol, u16), Action> {
    let Some(Entry::Selected(class)) = desired.cgroups.get(&cgroup) else {
        return BTreeMap::new();
    };
    desired
        .targets
        .iter()
        .filter(|(key, _)| key.class == *class && key.set == set)
        .map(|(key, target)| ((key.protocol, key.port), target.action))
        .collect()
}

fn redirect(gateway: &str, port: u16) -> Action {
    Action::Redirect {
        gateways: Gateways::from_addresses([ip(gateway)]),
        port,
    }
}

#[test]
fn static_resolved_and_prefixes_become_addresses_and_targets() {
    let rules = vec![rule(
        "a",
        Some("10.96.0.1"),
        &["203.0.113.0/24", "198.51.100.9"],
        &["example.test"],
    )];
    let desired = run(
        &intent(rules, &[(7, &[0])]),
        &resolved(&[("example.test", &["192.0.2.7", "2001:db8::7"])]),
    );
    let addresses: Vec<String> = desired.addresses.keys().map(ToString::to_string).collect();
    assert_eq!(addresses, ["192.0.2.7", "198.51.100.9", "2001:db8::7"]);
    assert_eq!(
        desired.addresses[&ip("198.51.100.9")].source,
        Source::Static
    );
    assert_eq!(desired.addresses[&ip("192.0.2.7")].source, Source::Resolved);
    assert_eq!(desired.addresses[&ip("192.0.2.7")].expires_ns, 1_000);
    assert_eq!(desired.cidrs.len(), 1);
    let resolved_set = desired.addresses[&ip("192.0.2.7")].set;
    assert_eq!(
        resolved_set, desired.pattern_ids["example.test"],
        "a hostname alone keeps its pattern's id, which learned addresses carry"
    );
    for set in [
        resolved_set,
        desired.addresses[&ip("198.51.100.9")].set,
        desired.cidrs[&"203.0.113.0/24".parse().unwrap()],
    ] {
        assert_eq!(
            targets_for(&desired, 7, set),
            BTreeMap::from([((Protocol::Tcp, 443), redirect("10.96.0.1", 8443))])
        );
    }
    assert!(desired.settings.has_cidrs);
    assert_eq!(desired.settings.dns_ports, [53]);
    assert!(desired.trusted.contains(&"127.0.0.1:53".parse().unwrap()));
}

#[test]
fn patterns_cover_exact_names_and_wildcards_by_hash() {
    let rules = vec![rule(
        "a",
        Some("10.96.0.1"),
        &[],
        &["api.test", "*.cdn.test"],
    )];
    let desired = run(&intent(rules, &[(7, &[0])]), &Facts::default());
    let wildcard = desired.pattern_ids["*.cdn.test"];
    assert_eq!(
        desired
            .patterns
            .get(&egress_common::name::hash(42, "*.cdn.test")),
        Some(&wildcard)
    );
    assert_eq!(
        targets_for(&desired, 7, wildcard),
        BTreeMap::from([((Protocol::Tcp, 443), redirect("10.96.0.1", 8443))]),
        "a wildcard's set has targets even before anything is learned"
    );
    assert_eq!(
        desired.labels.get(&(label_kind::PATTERN, wildcard)),
        Some(&"*.cdn.test".to_owned())
    );
}

#[test]
fn rules_steer_only_the_cgroups_they_select() {
    let rules = vec![
        rule("platform", Some("10.96.0.1"), &[], &["api.test"]),
        rule("tenant", Some("10.96.0.2"), &[], &["api.test"]),
    ];
    let desired = run(
        &intent(rules, &[(1, &[0]), (2, &[1]), (3, &[0, 1])]),
        &resolved(&[("api.test", &["192.0.2.1"])]),
    );
    let set = desired.addresses[&ip("192.0.2.1")].set;
    let expect = |gw| BTreeMap::from([((Protocol::Tcp, 443), redirect(gw, 8443))]);
    assert_eq!(targets_for(&desired, 1, set), expect("10.96.0.1"));
    assert_eq!(
        targets_for(&desired, 2, set),
        expect("10.96.0.2"),
        "no cross-class steering"
    );
    assert_eq!(
        targets_for(&desired, 3, set),
        expect("10.96.0.1"),
        "the first rule wins"
    );
    assert_eq!(
        desired.conflicts,
        [Conflict {
            destination: "api.test".to_owned(),
            protocol: Protocol::Tcp,
            port: 443,
            winner: owner("platform"),
            loser: owner("tenant"),
        }],
        "a conflict only where both select the same cgroup"
    );
}

#[test]
fn shared_addresses_form_a_set_covering_both_hostnames() {
    let mut a = rule("a", Some("10.96.0.1"), &[], &["one.test"]);
    a.ports = vec![port(443, 443, Protocol::Tcp)];
    let mut b = rule("b", Some("10.96.0.2"), &[], &["two.test"]);
    b.ports = vec![port(80, 80, Protocol::Tcp)];
    let desired = run(
        &intent(vec![a, b], &[(1, &[0, 1]), (2, &[1])]),
        &resolved(&[("one.test", &["192.0.2.1"]), ("two.test", &["192.0.2.1"])]),
    );
    let set = desired.addresses[&ip("192.0.2.1")].set;
    assert!(set >= FIRST_COMPOSITE_SET);
    assert_eq!(desired.labels[&(label_kind::SET, set)], "one.test +1");
    assert_eq!(
        targets_for(&desired, 1, set),
        BTreeMap::from([
            ((Protocol::Tcp, 80), redirect("10.96.0.2", 80)),
            ((Protocol::Tcp, 443), redirect("10.96.0.1", 443)),
        ])
    );
    assert_eq!(
        targets_for(&desired, 2, set),
        BTreeMap::from([((Protocol::Tcp, 80), redirect("10.96.0.2", 80))])
    );
    assert!(desired.conflicts.is_empty());
}

#[test]
fn gateways_unknown_refuse_when_fail_closed_and_pass_otherwise() {
    let mut closed = rule("closed", None, &["192.0.2.1"], &[]);
    closed.fail_closed = true;
    let open = rule("open", None, &["192.0.2.2"], &[]);
    let desired = run(
        &intent(vec![closed, open], &[(1, &[0, 1])]),
        &Facts::default(),
    );
    assert_eq!(
        targets_for(&desired, 1, desired.addresses[&ip("192.0.2.1")].set),
        BTreeMap::from([((Protocol::Tcp, 443), Action::Refuse(Refusal::FailClosed))])
    );
    assert!(targets_for(&desired, 1, desired.addresses[&ip("192.0.2.2")].set).is_empty());
}

#[test]
fn quic_is_refused_where_tcp_443_is_redirected() {
    let mut quic = rule("quic", Some("10.96.0.1"), &["192.0.2.1"], &[]);
    quic.refuse_quic = true;
    quic.ports = vec![port(443, 443, Protocol::Tcp)];
    let mut allowed = rule("allowed", Some("10.96.0.1"), &["192.0.2.2"], &[]);
    allowed.ports = vec![port(443, 443, Protocol::Tcp)];
    let desired = run(
        &intent(vec![quic, allowed], &[(1, &[0, 1])]),
        &Facts::default(),
    );
    assert_eq!(
        targets_for(&desired, 1, desired.addresses[&ip("192.0.2.1")].set)[&(Protocol::Udp, 443)],
        Action::Refuse(Refusal::Quic)
    );
    assert!(
        !targets_for(&desired, 1, desired.addresses[&ip("192.0.2.2")].set)
            .contains_key(&(Protocol::Udp, 443)),
        "refuseQuic: false leaves QUIC alone"
    );
}

#[test]
fn prefixes_fold_into_the_addresses_and_prefixes_they_contain() {
    let mut wide = rule("wide", Some("10.96.0.1"), &["10.0.0.0/8"], &[]);
    wide.ports = vec![port(80, 80, Protocol::Tcp)];
    let narrow = rule(
        "narrow",
        Some("10.96.0.2"),
        &["10.1.0.0/16", "10.1.2.3"],
        &[],
    );
    let desired = run(
        &intent(vec![wide, narrow], &[(1, &[0, 1])]),
        &Facts::default(),
    );
    let narrow_set = desired.cidrs[&"10.1.0.0/16".parse().unwrap()];
    assert_eq!(
        targets_for(&desired, 1, narrow_set),
        BTreeMap::from([
            ((Protocol::Tcp, 80), redirect("10.96.0.1", 80)),
            ((Protocol::Tcp, 443), redirect("10.96.0.2", 8443)),
        ]),
        "the longest prefix stands for the wider one too"
    );
    assert_eq!(
        targets_for(&desired, 1, desired.addresses[&ip("10.1.2.3")].set).len(),
        2,
        "an exact address inside a prefix carries the prefix's rules"
    );
}

#[test]
fn exempt_wins_and_selections_merge() {
    let rules = vec![rule("a", Some("10.96.0.1"), &["192.0.2.1"], &[])];
    let mut intent = intent(rules, &[(1, &[0]), (2, &[0]), (1, &[])]);
    intent.exempt = vec![2];
    let desired = run(&intent, &Facts::default());
    assert!(matches!(desired.cgroups[&1], Entry::Selected(_)));
    assert_eq!(desired.cgroups[&2], Entry::Exempt);
}

#[test]
fn dual_stack_gateways_are_carried_and_ids_are_stable() {
    let mut dual = rule("dual", None, &["192.0.2.1"], &["v.test"]);
    dual.gateways = Gateways::from_addresses([ip("10.96.0.1"), ip("fd00::1")]);
    let intent = intent(vec![dual], &[(1, &[0])]);
    let mut ids = IdSpace::default();
    let first = compute(&intent, &Facts::default(), &mut ids, 7).unwrap();
    let target = first.targets.values().next().unwrap();
    assert!(matches!(
        target.action,
        Action::Redirect {
            gateways: Gateways {
                v4: Some(_),
                v6: Some(_)
            },
            ..
        }
    ));
    let second = compute(&intent, &Facts::default(), &mut ids, 7).unwrap();
    assert_eq!(first, second, "recomputing changes nothing");
}
