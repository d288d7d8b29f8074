//! The ABI shared by the egress-agent eBPF programs (kernel side) and the agent (userspace).
//!
//! Every map key and value is `#[repr(C)]`, has no implicit padding (reserved fields are
//! explicit and always zero) and has its size asserted at compile time, so both sides agree on
//! the layout byte for byte.
//!
//! # Byte order
//!
//! * Addresses are stored as they appear on the wire: `[u8; 4]` / `[u8; 16]`, network order.
//!   IPv4 addresses in 16-byte fields are IPv4-mapped (`::ffff:a.b.c.d`).
//! * Ports named `*_be` are in network byte order (as in `bpf_sock_addr.user_port`).
//! * Everything else (ids, flags, counters, prefix lengths) is in host byte order.
#![no_std]

mod keys;
pub mod maps;
mod values;

pub use keys::{RevNatKey, RouteKey4, RouteKey6};
pub use values::{CgroupMode, HostLabel, RevNatValue, RouteValue, RuleName};

/// The eBPF programs: (program name in the object, pinned link name).
pub mod programs {
    /// Every `sock_addr` program the agent attaches.
    pub const ALL: [&str; 8] = [
        "connect4",
        "connect6",
        "sendmsg4",
        "sendmsg6",
        "recvmsg4",
        "recvmsg6",
        "getpeername4",
        "getpeername6",
    ];
}

/// Limits that are not map capacities (those are in [`maps`]).
pub mod limits {
    /// How many cgroup levels the selection walk examines, from the root (level 0) down.
    /// Kubernetes pods sit at level 3–5 (deeper when nested in kind); entries deeper than this
    /// are never consulted.
    pub const MAX_CGROUP_DEPTH: u32 = 16;
    /// Bytes in a rule name, NUL-padded.
    pub const RULE_NAME_LEN: usize = 64;
    /// Bytes in a route's host label, NUL-padded (a DNS name is at most 253).
    pub const HOST_LABEL_LEN: usize = 256;
}

/// Flags in [`RouteValue::flags`].
pub mod route_flags {
    /// When the gateway is unknown (all-zero address), refuse the connection with `EPERM`.
    pub const FAIL_CLOSED: u16 = 1 << 0;
    /// The gateway address is IPv4 (stored IPv4-mapped).
    pub const GATEWAY_V4: u16 = 1 << 1;
}

/// Indices of the global counters in the `STATS` per-CPU array.
pub mod stat {
    /// Connections and datagrams rewritten to a gateway.
    pub const REDIRECTED: u32 = 0;
    /// Connections and datagrams refused because a fail-closed route had no gateway.
    pub const DENIED: u32 = 1;
    /// Route hits from tasks that are not selected (or are exempt): passed untouched.
    pub const UNSELECTED: u32 = 2;
    /// Route hits whose gateway family cannot be reached from the socket (v6 gateway, v4 socket).
    pub const FAMILY_MISMATCH: u32 = 3;
    /// Reply sources (recvmsg) and peer names (getpeername) restored to the original destination.
    pub const REVERSED: u32 = 4;
    /// Reverse-NAT entries that could not be stored (the map update failed).
    pub const REVNAT_FAILED: u32 = 5;
    /// Number of counters.
    pub const COUNT: u32 = 6;
    /// Counter names, indexed as above; stable, used by the CLI's JSON output.
    pub const NAMES: [&str; COUNT as usize] = [
        "redirected",
        "denied",
        "unselected",
        "family_mismatch",
        "reversed",
        "revnat_failed",
    ];
}

/// Protocol numbers as the kernel reports them in `bpf_sock_addr.protocol`.
pub mod proto {
    /// `IPPROTO_TCP`.
    pub const TCP: u8 = 6;
    /// `IPPROTO_UDP`.
    pub const UDP: u8 = 17;
}

/// Returns `addr` as an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
#[must_use]
pub const fn v4_mapped(addr: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3],
    ]
}

/// Returns the IPv4 address inside an IPv4-mapped IPv6 address, or `None`.
#[must_use]
pub const fn v4_unmapped(addr: &[u8; 16]) -> Option<[u8; 4]> {
    if addr[0] == 0
        && addr[1] == 0
        && addr[2] == 0
        && addr[3] == 0
        && addr[4] == 0
        && addr[5] == 0
        && addr[6] == 0
        && addr[7] == 0
        && addr[8] == 0
        && addr[9] == 0
        && addr[10] == 0xff
        && addr[11] == 0xff
    {
        Some([addr[12], addr[13], addr[14], addr[15]])
    } else {
        None
    }
}

#[cfg(test)]
#[path = "lib_tests.rs"]
mod tests;
