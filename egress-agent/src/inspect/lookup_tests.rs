use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use egress_common::config_flags;

use super::{Connection, Outcome, RefuseReason, SocketKind, Via, lookup};
use crate::{
    inspect::Snapshot,
    route::{Action, AddrEntry, Gateways, Protocol, Refusal, Source, Target, TargetKey},
};

const CLASS: u32 = 1;
const SCOPE: u64 = 42;
const GW1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const GW2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 6);

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

fn entry(set: u32) -> AddrEntry {
    AddrEntry {
        set,
        source: Source::Static,
        expires_ns: 0,
    }
}

fn redirect(v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>, rule: u32) -> Target {
    Target {
        action: Action::Redirect {
            gateways: Gateways { v4, v6 },
            port: 8443,
        },
        rule,
        counter: rule,
    }
}

/// Maps with the prefix flag on.
fn maps() -> Snapshot {
    Snapshot {
        flags: config_flags::HAS_CIDRS,
        ..Snapshot::default()
    }
}

fn route(maps: &mut Snapshot, set: u32, port: u16, target: Target) {
    let key = TargetKey {
        class: CLASS,
        set,
        protocol: Protocol::Tcp,
        port,
    };
    maps.targets.insert(key, target);
}

fn connect(maps: &Snapshot, dest: &str, port: u16, socket: SocketKind) -> Outcome {
    lookup(
        maps,
        &Connection {
            class: CLASS,
            scope: SCOPE,
            dest: ip(dest),
            protocol: Protocol::Tcp,
            port,
            socket,
        },
    )
}

fn redirected(via: Via, gateway: IpAddr, rule: u32) -> Outcome {
    Outcome::Redirect {
        via,
        gateway,
        gateway_port: 8443,
        rule,
    }
}

/// The case: 10.0.0.0/8 → gw1 and 10.1.2.3 → gw2 in one class. The kernel uses gw2
/// for 10.1.2.3 and gw1 for the rest of the prefix.
#[test]
fn the_exact_address_wins_over_a_prefix_holding_it() {
    let mut m = maps();
    m.cidrs.insert("10.0.0.0/8".parse().expect("net"), 1);
    m.addresses.insert(ip("10.1.2.3"), entry(2));
    route(&mut m, 1, 443, redirect(Some(GW1), None, 1));
    route(&mut m, 2, 443, redirect(Some(GW2), None, 2));
    assert_eq!(
        connect(&m, "10.1.2.3", 443, SocketKind::Ipv4),
        redirected(Via::Address, IpAddr::V4(GW2), 2)
    );
    assert_eq!(
        connect(&m, "10.9.9.9", 443, SocketKind::Ipv4),
        redirected(
            Via::Prefix("10.0.0.0/8".parse().expect("net")),
            IpAddr::V4(GW1),
            1
        )
    );
}

#[test]
fn an_exact_address_without_a_target_on_the_port_stops_there() {
    let mut m = maps();
    m.cidrs.insert("10.0.0.0/8".parse().expect("net"), 1);
    m.addresses.insert(ip("10.1.2.3"), entry(2));
    route(&mut m, 1, 443, redirect(Some(GW1), None, 1));
    route(&mut m, 2, 80, redirect(Some(GW2), None, 2));
    assert_eq!(
        connect(&m, "10.1.2.3", 443, SocketKind::Ipv4),
        Outcome::NoTarget {
            via: Some(Via::Address)
        }
    );
}

#[test]
fn the_longest_prefix_wins_and_prefixes_need_the_flag() {
    let mut m = maps();
    m.cidrs.insert("10.0.0.0/8".parse().expect("net"), 1);
    m.cidrs.insert("10.1.0.0/16".parse().expect("net"), 2);
    route(&mut m, 1, 443, redirect(Some(GW1), None, 1));
    route(&mut m, 2, 443, redirect(Some(GW2), None, 2));
    assert_eq!(
        connect(&m, "10.1.200.1", 443, SocketKind::Ipv4),
        redirected(
            Via::Prefix("10.1.0.0/16".parse().expect("net")),
            IpAddr::V4(GW2),
            2
        )
    );
    m.flags = 0;
    assert_eq!(
        connect(&m, "10.1.200.1", 443, SocketKind::Ipv4),
        Outcome::NotRouted
    );
}

#[test]
fn an_ipv6_prefix_of_mapped_addresses_holds_ipv4_destinations() {
    let mut m = maps();
    m.cidrs
        .insert("::ffff:10.0.0.0/104".parse().expect("net"), 1);
    route(&mut m, 1, 443, redirect(Some(GW1), None, 1));
    assert!(matches!(
        connect(&m, "10.1.2.3", 443, SocketKind::Ipv4),
        Outcome::Redirect { .. }
    ));
}

#[test]
fn what_the_scope_learned_comes_first_when_it_has_a_target() {
    let mut m = maps();
    m.addresses.insert(ip("10.1.2.3"), entry(1));
    m.learned.insert((SCOPE, ip("10.1.2.3")), entry(2));
    m.markers.insert(ip("10.1.2.3"));
    route(&mut m, 1, 443, redirect(Some(GW1), None, 1));
    route(&mut m, 2, 443, redirect(Some(GW2), None, 2));
    assert_eq!(
        connect(&m, "10.1.2.3", 443, SocketKind::Ipv4),
        redirected(Via::Learned, IpAddr::V4(GW2), 2)
    );
    // On a port only the address's own set routes, the learned entry is passed over.
    route(&mut m, 1, 80, redirect(Some(GW1), None, 1));
    assert_eq!(
        connect(&m, "10.1.2.3", 80, SocketKind::Ipv4),
        Outcome::Redirect {
            via: Via::Address,
            gateway: IpAddr::V4(GW1),
            gateway_port: 8443,
            rule: 1
        }
    );
}

#[test]
fn a_learned_entry_counts_only_with_its_marker_or_while_markers_are_incomplete() {
    let mut m = maps();
    m.learned.insert((SCOPE, ip("10.1.2.3")), entry(2));
    route(&mut m, 2, 443, redirect(Some(GW2), None, 2));
    assert_eq!(
        connect(&m, "10.1.2.3", 443, SocketKind::Ipv4),
        Outcome::NotRouted
    );
    m.flags |= config_flags::MARKERS_INCOMPLETE;
    assert_eq!(
        connect(&m, "10.1.2.3", 443, SocketKind::Ipv4),
        redirected(Via::Learned, IpAddr::V4(GW2), 2)
    );
}

#[test]
fn what_another_scope_learned_goes_direct() {
    let mut m = maps();
    m.learned.insert((SCOPE + 1, ip("10.1.2.3")), entry(2));
    m.markers.insert(ip("10.1.2.3"));
    route(&mut m, 2, 443, redirect(Some(GW2), None, 2));
    assert_eq!(
        connect(&m, "10.1.2.3", 443, SocketKind::Ipv4),
        Outcome::NoTarget { via: None }
    );
}

#[test]
fn refusals_keep_their_reason() {
    let mut m = maps();
    m.addresses.insert(ip("10.1.2.3"), entry(1));
    route(
        &mut m,
        1,
        443,
        Target {
            action: Action::Refuse(Refusal::FailClosed),
            rule: 7,
            counter: 7,
        },
    );
    assert_eq!(
        connect(&m, "10.1.2.3", 443, SocketKind::Ipv4),
        Outcome::Refuse {
            via: Via::Address,
            reason: RefuseReason::FailClosed,
            rule: 7
        }
    );
}

/// The gateway of the socket's family, as `verdict` in redirect.rs chooses it.
#[test]
fn the_gateway_is_the_one_of_the_sockets_family() {
    let mut m = maps();
    m.addresses.insert(ip("10.1.2.3"), entry(1));
    m.addresses.insert(ip("2001:db8::1"), entry(2));
    m.addresses.insert(ip("2001:db8::2"), entry(3));
    route(&mut m, 1, 443, redirect(None, Some(GW6), 1));
    route(&mut m, 2, 443, redirect(Some(GW1), None, 2));
    route(&mut m, 3, 443, redirect(Some(GW1), Some(GW6), 3));
    let mismatch = |rule| Outcome::Refuse {
        via: Via::Address,
        reason: RefuseReason::FamilyMismatch,
        rule,
    };
    let table = [
        // An IPv4 destination with only an IPv6 gateway.
        ("10.1.2.3", SocketKind::Ipv4, mismatch(1)),
        (
            "10.1.2.3",
            SocketKind::DualStack,
            redirected(Via::Address, IpAddr::V6(GW6), 1),
        ),
        (
            "::ffff:10.1.2.3",
            SocketKind::DualStack,
            redirected(Via::Address, IpAddr::V6(GW6), 1),
        ),
        // An IPv6 destination with only an IPv4 gateway.
        (
            "2001:db8::1",
            SocketKind::DualStack,
            redirected(Via::Address, IpAddr::V4(GW1), 2),
        ),
        ("2001:db8::1", SocketKind::V6Only, mismatch(2)),
        // Both: the destination's family.
        (
            "2001:db8::2",
            SocketKind::DualStack,
            redirected(Via::Address, IpAddr::V6(GW6), 3),
        ),
        (
            "2001:db8::2",
            SocketKind::V6Only,
            redirected(Via::Address, IpAddr::V6(GW6), 3),
        ),
    ];
    for (dest, socket, expected) in table {
        assert_eq!(
            connect(&m, dest, 443, socket),
            expected,
            "{dest} from a {socket:?} socket"
        );
    }
}
