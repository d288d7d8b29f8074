//! What the connect hook does with one connection, computed from the maps as the kernel
//! computes it (`egress-ebpf/src/redirect.rs`): the one answer `explain` gives.
//!
//! For a selected task (its class and scope known):
//!
//! 1. the destination is routed for someone at all when it has an exact entry, a learned
//!    marker (or markers are incomplete), or, with no exact entry, a prefix holding it;
//! 2. the scope's learned entry is tried first, but only when it leads to a target;
//! 3. else the exact entry decides, even when its set has no target for this class and port
//!    (a prefix holding the address is then never looked at);
//! 4. else the longest prefix holding it;
//! 5. the target's gateway is the one of the socket's family: an IPv4 socket takes the IPv4
//!    gateway; a dual-stack socket the destination's family first, then the other; an
//!    `IPV6_V6ONLY` socket to an IPv6 destination only the IPv6 one. None left: refused.

use std::net::{IpAddr, Ipv6Addr};

use egress_common::config_flags;
use ipnet::IpNet;
use serde::Serialize;

use super::Snapshot;
use crate::route::{Action, Protocol, Refusal, TargetKey};

/// The socket that connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SocketKind {
    /// `AF_INET`.
    Ipv4,
    /// `AF_INET6` that also reaches IPv4 (through mapped addresses).
    DualStack,
    /// `AF_INET6` with `IPV6_V6ONLY`.
    V6Only,
}

impl SocketKind {
    /// The kinds of socket that can connect to `dest`.
    pub fn for_destination(dest: IpAddr) -> &'static [Self] {
        match dest.to_canonical() {
            IpAddr::V4(_) => &[Self::Ipv4, Self::DualStack],
            IpAddr::V6(_) => &[Self::DualStack, Self::V6Only],
        }
    }
}

/// The entry that decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "prefix")]
pub enum Via {
    /// What the connecting task's scope learned from a DNS answer.
    Learned,
    /// The address's own entry (static or resolved by the agent).
    Address,
    /// The longest static prefix holding the address.
    Prefix(IpNet),
}

/// Why a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RefuseReason {
    /// The rule is fail-closed and its gateway has no address.
    FailClosed,
    /// QUIC to a destination redirected on TCP 443.
    Quic,
    /// The gateway has no address of a family this socket can reach.
    FamilyMismatch,
}

/// What the connect hook does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "action"
)]
pub enum Outcome {
    /// No entry routes the destination for anyone: the hook passes it without asking who
    /// connects.
    NotRouted,
    /// Routed, but the entry that decides has no target for this class, protocol and port (or
    /// only another scope learned it): direct.
    NoTarget {
        /// The entry that decided, if one did.
        via: Option<Via>,
    },
    /// Rewritten to the gateway.
    Redirect {
        /// The entry that decided.
        via: Via,
        /// The gateway (the socket's family's).
        gateway: IpAddr,
        /// Its port.
        gateway_port: u16,
        /// The rule's id.
        rule: u32,
    },
    /// Refused (`EPERM`).
    Refuse {
        /// The entry that decided.
        via: Via,
        /// Why.
        reason: RefuseReason,
        /// The rule's id.
        rule: u32,
    },
}

/// One connection.
#[derive(Clone, Copy, Debug)]
pub struct Connection {
    /// The class of the selected entry.
    pub class: u32,
    /// Its scope (the entry's cgroup id).
    pub scope: u64,
    /// The destination.
    pub dest: IpAddr,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its port.
    pub port: u16,
    /// The socket.
    pub socket: SocketKind,
}

/// What the hook does with `c`, from the maps in `maps`.
pub fn lookup(maps: &Snapshot, c: &Connection) -> Outcome {
    let dest = c.dest.to_canonical();
    let global = maps.addresses.get(&dest).map(|entry| entry.set);
    let learned_visible =
        maps.flags & config_flags::MARKERS_INCOMPLETE != 0 || maps.markers.contains(&dest);
    let prefix = if global.is_none() && maps.flags & config_flags::HAS_CIDRS != 0 {
        longest_prefix(maps, dest)
    } else {
        None
    };
    if global.is_none() && !learned_visible && prefix.is_none() {
        return Outcome::NotRouted;
    }
    let target = |set: u32| {
        maps.targets.get(&TargetKey {
            class: c.class,
            set,
            protocol: c.protocol,
            port: c.port,
        })
    };
    let learned = learned_visible
        .then(|| maps.learned.get(&(c.scope, dest)))
        .flatten()
        .and_then(|entry| target(entry.set));
    let (via, found) = match (learned, global, prefix) {
        (Some(found), _, _) => (Via::Learned, Some(found)),
        (None, Some(set), _) => (Via::Address, target(set)),
        (None, None, Some((net, set))) => (Via::Prefix(net), target(set)),
        (None, None, None) => return Outcome::NoTarget { via: None },
    };
    let Some(found) = found else {
        return Outcome::NoTarget { via: Some(via) };
    };
    let (gateways, gateway_port) = match found.action {
        Action::Refuse(refusal) => {
            let reason = match refusal {
                Refusal::FailClosed => RefuseReason::FailClosed,
                Refusal::Quic => RefuseReason::Quic,
            };
            return Outcome::Refuse {
                via,
                reason,
                rule: found.rule,
            };
        }
        Action::Redirect { gateways, port } => (gateways, port),
    };
    let v4 = gateways.v4.map(IpAddr::V4);
    let v6 = gateways.v6.map(IpAddr::V6);
    let gateway = match (c.socket, dest) {
        (SocketKind::Ipv4, _) => v4,
        // The destination's own family first; the kernel does not look at IPV6_V6ONLY here.
        (SocketKind::DualStack | SocketKind::V6Only, IpAddr::V4(_)) => v4.or(v6),
        (SocketKind::DualStack, IpAddr::V6(_)) => v6.or(v4),
        (SocketKind::V6Only, IpAddr::V6(_)) => v6,
    };
    match gateway {
        Some(gateway) => Outcome::Redirect {
            via,
            gateway,
            gateway_port,
            rule: found.rule,
        },
        None => Outcome::Refuse {
            via,
            reason: RefuseReason::FamilyMismatch,
            rule: found.rule,
        },
    }
}

/// The longest static prefix holding `dest` (the kernel's LPM trie holds IPv4 prefixes as
/// IPv4-mapped IPv6 ones, so the two families never mix).
fn longest_prefix(maps: &Snapshot, dest: IpAddr) -> Option<(IpNet, u32)> {
    let mapped = |addr: IpAddr| match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let dest6: Ipv6Addr = mapped(dest);
    maps.cidrs
        .iter()
        .filter(|(net, _)| net.contains(&dest) || mapped_contains(net, dest6))
        .max_by_key(|(net, _)| mapped_len(net))
        .map(|(net, set)| (*net, *set))
}

fn mapped_len(net: &IpNet) -> u8 {
    match net {
        IpNet::V4(v4) => v4.prefix_len() + 96,
        IpNet::V6(v6) => v6.prefix_len(),
    }
}

/// Whether an IPv6 prefix holds the mapped form of an address (a `::ffff:0:0/96` prefix holds
/// every IPv4 address, as in the kernel's trie).
fn mapped_contains(net: &IpNet, dest6: Ipv6Addr) -> bool {
    matches!(net, IpNet::V6(v6) if v6.contains(&dest6))
}

#[cfg(test)]
#[path = "lookup_tests.rs"]
mod tests;
