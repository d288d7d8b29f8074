//! Every conversion between the agent's route types and map bytes: byte order, IPv4 mapping,
//! LPM prefix lengths, NUL-padded labels and their truncation. Nothing else in the agent builds
//! or reads an `egress_common` key or value field by field.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::lpm_trie::Key;
use egress_common::{
    AddrValue, CgroupEntry, Label, ResolverKey, cgroup_kind, proto, source, target_flags,
    v4_mapped, v4_unmapped,
};
use ipnet::IpNet;

use crate::route::{
    Action, AddrEntry, Entry, Gateways, Protocol, Refusal, Source, Target, TargetKey,
};

/// An address as the maps store it: 16 bytes, IPv4 mapped.
pub(crate) fn addr_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address 16 stored bytes stand for (IPv4-mapped ones as IPv4).
pub(crate) fn addr_of(bytes: [u8; 16]) -> IpAddr {
    v4_unmapped(&bytes).map_or_else(
        || IpAddr::V6(Ipv6Addr::from(bytes)),
        |v4| IpAddr::V4(Ipv4Addr::from(v4)),
    )
}

/// A prefix's key in `CIDRS`: IPv4 prefixes as IPv4-mapped IPv6 prefixes.
pub(crate) fn cidr_key(net: &IpNet) -> Key<[u8; 16]> {
    let prefix = match net {
        IpNet::V4(v4) => 96 + u32::from(v4.prefix_len()),
        IpNet::V6(v6) => u32::from(v6.prefix_len()),
    };
    Key::new(prefix, addr_bytes(net.network()))
}

/// The prefix a `CIDRS` key stands for.
pub(crate) fn cidr_of(key: &Key<[u8; 16]>) -> Option<IpNet> {
    let addr = addr_of(key.data());
    let prefix = match addr {
        IpAddr::V4(_) => key.prefix_len().checked_sub(96)?,
        IpAddr::V6(_) => key.prefix_len(),
    };
    IpNet::new(addr, u8::try_from(prefix).ok()?).ok()
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

/// A cgroup entry's value.
pub(crate) const fn entry_value(entry: Entry) -> CgroupEntry {
    match entry {
        Entry::Selected(class) => CgroupEntry {
            kind: cgroup_kind::SELECTED,
            class,
        },
        Entry::Exempt => CgroupEntry {
            kind: cgroup_kind::EXEMPT,
            class: 0,
        },
    }
}

/// The entry a value holds; `None` for a value no agent writes.
pub(crate) const fn entry_of(value: CgroupEntry) -> Option<Entry> {
    match value.kind {
        cgroup_kind::SELECTED => Some(Entry::Selected(value.class)),
        cgroup_kind::EXEMPT => Some(Entry::Exempt),
        _ => None,
    }
}

/// A target's key.
pub(crate) fn target_key(key: &TargetKey) -> egress_common::TargetKey {
    egress_common::TargetKey {
        class: key.class,
        set: key.set,
        proto: protocol_number(key.protocol),
        reserved: 0,
        port_be: key.port.to_be(),
    }
}

/// The key a stored target key stands for.
pub(crate) fn target_key_of(key: &egress_common::TargetKey) -> Option<TargetKey> {
    Some(TargetKey {
        class: key.class,
        set: key.set,
        protocol: protocol_of(key.proto)?,
        port: u16::from_be(key.port_be),
    })
}

/// A target's value.
pub(crate) fn target_value(target: &Target) -> egress_common::Target {
    let mut value = egress_common::Target {
        rule: target.rule,
        counter: target.counter,
        ..egress_common::Target::default()
    };
    match target.action {
        Action::Redirect { gateways, port } => {
            value.gateway4 = gateways.v4.map_or([0; 4], |v4| v4.octets());
            value.gateway6 = gateways.v6.map_or([0; 16], |v6| v6.octets());
            value.gateway_port_be = port.to_be();
        }
        Action::Refuse(reason) => {
            value.flags = target_flags::REFUSE;
            if reason == Refusal::Quic {
                value.flags |= target_flags::QUIC;
            }
        }
    }
    value
}

/// The target a stored value holds.
pub(crate) fn target_of(value: &egress_common::Target) -> Target {
    let action = if value.flags & target_flags::REFUSE != 0 {
        Action::Refuse(if value.flags & target_flags::QUIC != 0 {
            Refusal::Quic
        } else {
            Refusal::FailClosed
        })
    } else {
        Action::Redirect {
            gateways: Gateways {
                v4: value.has_v4().then(|| Ipv4Addr::from(value.gateway4)),
                v6: value.has_v6().then(|| Ipv6Addr::from(value.gateway6)),
            },
            port: u16::from_be(value.gateway_port_be),
        }
    };
    Target {
        action,
        rule: value.rule,
        counter: value.counter,
    }
}

/// An address entry's value.
pub(crate) const fn addr_value(entry: &AddrEntry) -> AddrValue {
    AddrValue {
        set: entry.set,
        source: match entry.source {
            Source::Static => source::STATIC,
            Source::Resolved => source::RESOLVED,
            Source::Learned => source::LEARNED,
        },
        expires_ns: entry.expires_ns,
    }
}

/// The entry a stored value holds; `None` for a value no agent or program writes.
pub(crate) const fn addr_entry_of(value: &AddrValue) -> Option<AddrEntry> {
    let source = match value.source {
        source::STATIC => Source::Static,
        source::RESOLVED => Source::Resolved,
        source::LEARNED => Source::Learned,
        _ => return None,
    };
    Some(AddrEntry {
        set: value.set,
        source,
        expires_ns: value.expires_ns,
    })
}

/// A trusted resolver's key.
pub(crate) fn resolver_key(resolver: std::net::SocketAddr) -> ResolverKey {
    ResolverKey {
        addr: addr_bytes(resolver.ip()),
        port_be: resolver.port().to_be(),
        reserved: [0; 6],
    }
}

/// The resolver a key stands for.
pub(crate) fn resolver_of(key: &ResolverKey) -> std::net::SocketAddr {
    std::net::SocketAddr::new(addr_of(key.addr), u16::from_be(key.port_be))
}

/// `text` as a label stores it: cut to `LABEL_LEN - 1` bytes at a character boundary, so a NUL
/// always follows.
pub(crate) fn stored_text(text: &str) -> &str {
    let mut end = text.len().min(egress_common::limits::LABEL_LEN - 1);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A label's value.
pub(crate) fn label_value(text: &str) -> Label {
    let stored = stored_text(text);
    let mut label = Label::default();
    label.bytes[..stored.len()].copy_from_slice(stored.as_bytes());
    label
}

/// The text of a stored label (before the first NUL).
pub(crate) fn label_of(label: &Label) -> String {
    let end = label
        .bytes
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(label.bytes.len());
    String::from_utf8_lossy(&label.bytes[..end]).into_owned()
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
