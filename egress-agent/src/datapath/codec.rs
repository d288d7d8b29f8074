//! Every conversion between the agent's route types and map bytes: byte order, IPv4 mapping,
//! LPM prefix lengths, NUL-padded names and their truncation. Nothing else in the agent builds
//! or reads an `egress_common` key or value field by field.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::lpm_trie::Key;
use egress_common::{
    CgroupMode, HostLabel, RouteKey4, RouteKey6, RouteValue, RuleName, proto, route_flags,
    v4_mapped, v4_unmapped,
};
use ipnet::IpNet;

use crate::route::{Mode, Protocol, RouteMatch, RouteTarget};

/// A route's key in its family's LPM trie: protocol and port in full, then the prefix.
pub(crate) enum TrieKey {
    /// In `ROUTES_V4`.
    V4(Key<RouteKey4>),
    /// In `ROUTES_V6`.
    V6(Key<RouteKey6>),
}

/// The trie key of a route.
pub(crate) fn trie_key(route: &RouteMatch) -> TrieKey {
    let proto = protocol_number(route.protocol);
    let port_be = route.port.to_be();
    let prefix = u32::from(route.dest.prefix_len());
    match route.dest.addr() {
        IpAddr::V4(addr) => TrieKey::V4(Key::new(
            RouteKey4::HEADER_BITS + prefix,
            RouteKey4 {
                proto,
                reserved: 0,
                port_be,
                addr: addr.octets(),
            },
        )),
        IpAddr::V6(addr) => TrieKey::V6(Key::new(
            RouteKey6::HEADER_BITS + prefix,
            RouteKey6 {
                proto,
                reserved: 0,
                port_be,
                addr: addr.octets(),
            },
        )),
    }
}

/// The route an IPv4 trie key stands for; `None` for a key no agent writes.
pub(crate) fn route_of_v4(key: &Key<RouteKey4>) -> Option<RouteMatch> {
    let data = key.data();
    route_match(
        data.proto,
        data.port_be,
        IpAddr::V4(Ipv4Addr::from(data.addr)),
        key.prefix_len().checked_sub(RouteKey4::HEADER_BITS)?,
    )
}

/// The route an IPv6 trie key stands for.
pub(crate) fn route_of_v6(key: &Key<RouteKey6>) -> Option<RouteMatch> {
    let data = key.data();
    route_match(
        data.proto,
        data.port_be,
        IpAddr::V6(Ipv6Addr::from(data.addr)),
        key.prefix_len().checked_sub(RouteKey6::HEADER_BITS)?,
    )
}

fn route_match(proto: u8, port_be: u16, addr: IpAddr, prefix: u32) -> Option<RouteMatch> {
    Some(RouteMatch {
        protocol: protocol_of(proto)?,
        port: u16::from_be(port_be),
        dest: IpNet::new(addr, u8::try_from(prefix).ok()?).ok()?,
    })
}

/// The IP protocol number of a protocol.
pub(crate) const fn protocol_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => proto::TCP,
        Protocol::Udp => proto::UDP,
    }
}

/// The protocol of an IP protocol number.
pub(crate) const fn protocol_of(number: u8) -> Option<Protocol> {
    match number {
        proto::TCP => Some(Protocol::Tcp),
        proto::UDP => Some(Protocol::Udp),
        _ => None,
    }
}

/// The map value for a target, with its ids and selection groups.
pub(crate) fn route_value(
    target: &RouteTarget,
    rule_id: u32,
    route_id: u32,
    groups: u32,
) -> RouteValue {
    let mut flags = 0;
    if target.fail_closed {
        flags |= route_flags::FAIL_CLOSED;
    }
    let gateway = match target.gateway {
        Some(IpAddr::V4(v4)) => {
            flags |= route_flags::GATEWAY_V4;
            v4_mapped(v4.octets())
        }
        Some(IpAddr::V6(v6)) => v6.octets(),
        None => [0; 16],
    };
    RouteValue {
        gateway,
        gateway_port_be: target.gateway_port.to_be(),
        flags,
        rule_id,
        route_id,
        groups,
    }
}

/// The target a stored route value holds.
pub(crate) fn target_of(value: &RouteValue) -> RouteTarget {
    let gateway = value
        .has_gateway()
        .then(|| match v4_unmapped(&value.gateway) {
            Some(v4) if value.flags & route_flags::GATEWAY_V4 != 0 => {
                IpAddr::V4(Ipv4Addr::from(v4))
            }
            _ => IpAddr::V6(Ipv6Addr::from(value.gateway)),
        });
    RouteTarget {
        gateway,
        gateway_port: u16::from_be(value.gateway_port_be),
        fail_closed: value.flags & route_flags::FAIL_CLOSED != 0,
    }
}

/// The map value of a cgroup entry.
pub(crate) const fn mode_value(mode: Mode) -> CgroupMode {
    match mode {
        Mode::Selected(groups) => CgroupMode {
            mode: CgroupMode::SELECTED,
            groups,
        },
        Mode::Exempt => CgroupMode {
            mode: CgroupMode::EXEMPT,
            groups: 0,
        },
    }
}

/// The mode a cgroup entry holds; `None` for a value no agent writes.
pub(crate) const fn mode_of(value: CgroupMode) -> Option<Mode> {
    match value.mode {
        CgroupMode::SELECTED => Some(Mode::Selected(value.groups)),
        CgroupMode::EXEMPT => Some(Mode::Exempt),
        _ => None,
    }
}

/// `text` as the map stores it in a field of `len` bytes: cut to `len - 1` bytes at a character
/// boundary, so a NUL always follows.
pub(crate) fn stored_text(text: &str, len: usize) -> &str {
    let mut end = text.len().min(len.saturating_sub(1));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn padded<const N: usize>(text: &str) -> [u8; N] {
    let stored = stored_text(text, N);
    let mut bytes = [0; N];
    bytes[..stored.len()].copy_from_slice(stored.as_bytes());
    bytes
}

/// The text before the first NUL.
fn unpadded(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A rule name as the map stores it (see [`stored_text`]).
pub(crate) fn rule_name_value(name: &str) -> RuleName {
    RuleName {
        bytes: padded(name),
    }
}

/// A stored rule name.
pub(crate) fn rule_name_of(value: &RuleName) -> String {
    unpadded(&value.bytes)
}

/// The form a rule name takes in the map, to match names against stored ones.
pub(crate) fn stored_rule_name(name: &str) -> &str {
    stored_text(name, egress_common::limits::RULE_NAME_LEN)
}

/// A host label as the map stores it.
pub(crate) fn host_label_value(label: &str) -> HostLabel {
    HostLabel {
        bytes: padded(label),
    }
}

/// A stored host label.
pub(crate) fn host_label_of(value: &HostLabel) -> String {
    unpadded(&value.bytes)
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
