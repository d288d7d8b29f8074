//! The vocabulary of the datapath, as plain Rust values: cgroup entries, destination sets,
//! targets and where addresses came from. Everything above the datapath speaks these types;
//! `datapath::codec` alone turns them into map bytes and back.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use serde::{Deserialize, Serialize};

/// Transport protocol of a port mapping.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP: unconnected (sendmsg) and connected.
    #[serde(rename = "UDP")]
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        })
    }
}

/// A gateway's addresses, at most one per family (a dual-stack Service has both).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gateways {
    /// The IPv4 address, if any.
    pub v4: Option<Ipv4Addr>,
    /// The IPv6 address, if any.
    pub v6: Option<Ipv6Addr>,
}

impl Gateways {
    /// From a list of addresses: the first of each family (IPv4-mapped IPv6 counts as IPv4).
    pub fn from_addresses(addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut gateways = Self::default();
        for address in addresses {
            match address.to_canonical() {
                IpAddr::V4(v4) if gateways.v4.is_none() => gateways.v4 = Some(v4),
                IpAddr::V6(v6) if gateways.v6.is_none() => gateways.v6 = Some(v6),
                _ => {}
            }
        }
        gateways
    }

    /// Whether no address is known.
    pub const fn is_empty(&self) -> bool {
        self.v4.is_none() && self.v6.is_none()
    }

    /// The addresses, IPv4 first.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.v6.map(IpAddr::V6))
            .collect()
    }
}

impl fmt::Display for Gateways {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addresses: Vec<String> = self.addresses().iter().map(ToString::to_string).collect();
        if addresses.is_empty() {
            f.write_str("<none>")
        } else {
            f.write_str(&addresses.join(","))
        }
    }
}

/// A cgroup entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entry {
    /// Redirected, with descendants, by this routing class's targets.
    Selected(u32),
    /// Direct, with descendants, even inside a selected cgroup.
    Exempt,
}

/// What the datapath does with a class's connections to a destination set on a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Rewrite to the gateway of the socket's family (refused where the socket's family has
    /// none).
    Redirect {
        /// The gateway.
        gateways: Gateways,
        /// Its port.
        port: u16,
    },
    /// Refuse with `EPERM`.
    Refuse(Refusal),
}

/// Why connections are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Refusal {
    /// A fail-closed rule whose gateway is unknown.
    FailClosed,
    /// QUIC (UDP 443) to a destination redirected on TCP 443: HTTP/3 clients fall back to TCP
    /// through the gateway.
    Quic,
}

/// Where a class sends a destination set on a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetKey {
    /// The routing class.
    pub class: u32,
    /// The destination set.
    pub set: u32,
    /// The protocol.
    pub protocol: Protocol,
    /// The destination port.
    pub port: u16,
}

/// A target: the action, the rule it came from and its counter slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// What happens.
    pub action: Action,
    /// The rule's id.
    pub rule: u32,
    /// The counter slot.
    pub counter: u32,
}

/// Where an address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// A rule's static address.
    Static,
    /// The agent's own resolver.
    Resolved,
    /// A DNS answer a selected workload received.
    Learned,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Static => "static",
            Self::Resolved => "resolved",
            Self::Learned => "learned",
        })
    }
}

/// An address's entry: its destination set, where it came from, and when it may go
/// (`CLOCK_MONOTONIC` nanoseconds; 0: never).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AddrEntry {
    /// The destination set.
    pub set: u32,
    /// Where it came from.
    pub source: Source,
    /// When it may go.
    pub expires_ns: u64,
}

/// A DNS resolver whose answers may be learned.
pub type Resolver = std::net::SocketAddr;
