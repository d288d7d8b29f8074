//! The vocabulary of the datapath, as plain Rust values: what a route matches, where it sends
//! connections, and what a cgroup entry means. Everything above the datapath speaks these
//! types; `datapath::codec` alone turns them into map bytes and back.

use std::{fmt, net::IpAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Transport protocol of a route.
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

/// What a route matches: protocol, destination port and destination prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteMatch {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Destination port.
    pub port: u16,
    /// Destination address or CIDR.
    pub dest: IpNet,
}

/// Where a route sends matching connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteTarget {
    /// The gateway; `None` while unknown.
    pub gateway: Option<IpAddr>,
    /// Port on the gateway.
    pub gateway_port: u16,
    /// Refuse rather than go direct while the gateway is unknown.
    pub fail_closed: bool,
}

/// Selection groups: one bit per distinct policy selector in Kubernetes mode, every bit in
/// standalone mode. A task is redirected by a route when its cgroup entry's groups intersect
/// the route's.
pub type Groups = u32;

/// Every selection group.
pub const ALL_GROUPS: Groups = u32::MAX;

/// Mode of a cgroup entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// Redirected, with descendants, for routes of these selection groups.
    Selected(Groups),
    /// Direct, with descendants, even inside a selected cgroup.
    Exempt,
}
