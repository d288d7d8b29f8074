use super::*;
use crate::{intent::PortMap, route::Protocol};

fn owner(name: &str) -> RuleOwner {
    RuleOwner::File(name.to_owned())
}

fn rule(name: &str, gateway: Option<&str>, addresses: &[&str], hosts: &[&str]) -> RuleIntent {
    RuleIntent {
        owner: owner(name),
        gateway: gateway.map(|g| g.parse().unwrap()),
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
        ports: vec![PortMap {
            port: 443,
            gateway_port: 8443,
            protocol: Protocol::Tcp,
        }],
        groups: u32::MAX,
    }
}

fn route(dest: &str) -> RouteMatch {
    RouteMatch {
        protocol: Protocol::Tcp,
        port: 443,
        dest: dest.parse().unwrap(),
    }
}

#[test]
fn static_and_resolved_addresses_become_routes() {
    let rules = [rule(
        "a",
        Some("10.96.0.1"),
        &["203.0.113.0/24"],
        &["example.test"],
    )];
    let resolved = BTreeMap::from([(
        "example.test".to_owned(),
        BTreeSet::from([
            "198.51.100.7".parse().unwrap(),
            "2001:db8::7".parse().unwrap(),
        ]),
    )]);
    let desired = compute(&rules, &resolved, &[(7, u32::MAX)], &[]);
    let keys: Vec<_> = desired.routes.keys().map(|r| r.dest.to_string()).collect();
    assert_eq!(
        keys,
        ["198.51.100.7/32", "203.0.113.0/24", "2001:db8::7/128"]
    );
    let target = desired.routes[&route("203.0.113.0/24")].target;
    assert_eq!(target.gateway_port, 8443);
    assert!(
        desired.routes[&route("203.0.113.0/24")].hosts.is_empty(),
        "static route has no host"
    );
    assert_eq!(
        desired.routes[&route("198.51.100.7/32")].hosts,
        BTreeSet::from(["example.test".to_owned()]),
        "resolved route names its host"
    );
    assert_eq!(
        desired.cgroups,
        BTreeMap::from([(7, Mode::Selected(u32::MAX))])
    );
}

#[test]
fn unknown_gateway_drops_routes_unless_fail_closed() {
    let mut open = rule("open", None, &["203.0.113.1"], &[]);
    assert!(
        compute(&[open.clone()], &BTreeMap::new(), &[], &[])
            .routes
            .is_empty()
    );
    open.fail_closed = true;
    let desired = compute(&[open], &BTreeMap::new(), &[], &[]);
    let installed = &desired.routes[&route("203.0.113.1/32")];
    assert_eq!(
        installed.target.gateway, None,
        "fail-closed route has no gateway"
    );
}

#[test]
fn first_rule_wins_a_conflict() {
    let rules = [
        rule("first", Some("10.96.0.1"), &["203.0.113.1"], &[]),
        rule("second", Some("10.96.0.2"), &["203.0.113.1"], &[]),
        rule("same", Some("10.96.0.1"), &["203.0.113.1"], &[]),
    ];
    let desired = compute(&rules, &BTreeMap::new(), &[], &[]);
    let installed = &desired.routes[&route("203.0.113.1/32")];
    assert_eq!(installed.rule, 0);
    assert_eq!(
        desired.conflicts,
        [Conflict {
            route: route("203.0.113.1/32"),
            winner: owner("first"),
            loser: owner("second"),
        }],
        "a rule with the same target is no conflict"
    );
}

#[test]
fn groups_merge_and_exempt_wins_when_a_cgroup_is_both() {
    let desired = compute(&[], &BTreeMap::new(), &[(1, 1), (2, 1), (1, 4)], &[2]);
    assert_eq!(
        desired.cgroups,
        BTreeMap::from([(1, Mode::Selected(5)), (2, Mode::Exempt)])
    );
}

#[test]
fn a_conflict_loser_still_goes_through_the_winner_gateway() {
    let mut first = rule("first", Some("10.96.0.1"), &["203.0.113.1"], &[]);
    first.groups = 1;
    let mut second = rule("second", Some("10.96.0.2"), &["203.0.113.1"], &[]);
    second.groups = 2;
    let desired = compute(&[first, second], &BTreeMap::new(), &[], &[]);
    let route = &desired.routes[&route("203.0.113.1/32")];
    assert_eq!(
        route.target.gateway,
        Some("10.96.0.1".parse().unwrap()),
        "the first rule's gateway"
    );
    assert_eq!(
        route.groups, 3,
        "both rules' workloads are redirected, neither goes direct"
    );
}
