//! The ABI shared by the egress-agent eBPF programs (kernel side) and the agent (userspace).
//!
//! Every map key and value is `#[repr(C)]`, has no implicit padding (reserved fields are
//! explicit and always zero) and has its size asserted at compile time, so both sides agree on
//! the layout byte for byte. The map definitions themselves are in [`maps`]; the DNS name hash
//! both sides compute is in [`name`].
//!
//! # The lookup
//!
//! ```text
//! socket ─► SOCKETS (its decision: class, scope) ─┐      or the task's: DECISIONS ◄─ CGROUPS walk
//!                                                 ▼
//! destination ─► LEARNED[(scope, addr)]    learned by this workload (DNS answers it received)
//!             ─► ADDRESSES[addr]           static and resolved addresses
//!             ─► CIDRS                     static prefixes
//!                       │ set id
//!                       ▼
//!             TARGETS[(class, set, proto, port)] ─► gateway (v4, v6), port, flags, counter
//! ```
//!
//! # Byte order
//!
//! * Addresses are stored as they appear on the wire: `[u8; 4]` / `[u8; 16]`, network order.
//!   IPv4 addresses in 16-byte fields are IPv4-mapped (`::ffff:a.b.c.d`).
//! * Ports named `*_be` are in network byte order (as in `bpf_sock_addr.user_port`).
//! * Everything else (ids, flags, counters, times) is in host byte order.
#![no_std]

pub mod abi;
mod keys;
pub mod maps;
pub mod name;
mod values;

pub use keys::{AddrKey, LabelKey, ResolvedKey, ResolverKey, TargetKey};
pub use values::{
    AddrValue, CgroupEntry, CidrValue, Config, Counters, Decision, Label, PatternValue,
    REVERSE_SLOTS, Reverse, SocketState, Target,
};

/// The layout version of the pinned maps. Pins live under `maps/v<ABI_VERSION>/`, so an agent
/// with another layout never opens maps it cannot read; it fills its own set and migrates (see
/// the agent's `datapath::migrate`). Bump it with every change to [`maps::ALL`], to a key or
/// value type or to a shared constant; a unit test holds it to the last entry of
/// [`abi::HISTORY`].
pub const ABI_VERSION: u32 = 3;

/// The eBPF programs, by name in the object (also the pinned link's name).
pub mod programs {
    /// `cgroup/sock_create`: records a selected creator's decision on its new socket.
    pub const SOCK_CREATE: &str = "sock_create";
    /// `cgroup/setsockopt`: notes `IPV6_V6ONLY` on a selected socket (it cannot reach an
    /// IPv4 gateway through a mapped address).
    pub const SETSOCKOPT: &str = "setsockopt";
    /// `cgroup/skb` egress: remembers the DNS queries selected sockets send.
    pub const DNS_EGRESS: &str = "dns_egress";
    /// `cgroup/skb` ingress: learns addresses from the answers to those queries.
    pub const DNS_INGRESS: &str = "dns_ingress";
    /// `cgroup/skb` ingress, never attached: reads an answer's records, tail-called through the
    /// `ANSWERS` program array.
    pub const DNS_ANSWERS: &str = "dns_answers";
    /// Programs loaded but not attached (tail-call targets).
    pub const TAIL_CALLED: [&str; 1] = [DNS_ANSWERS];
    /// Every `sock_addr` program.
    pub const SOCK_ADDR: [&str; 8] = [
        "connect4",
        "connect6",
        "sendmsg4",
        "sendmsg6",
        "recvmsg4",
        "recvmsg6",
        "getpeername4",
        "getpeername6",
    ];
    /// Every program the agent attaches, in the order it attaches them: the `sock_addr` hooks
    /// last, so that by the time connections are redirected, sockets record their decisions
    /// and DNS answers are learned.
    pub const ALL: [&str; 12] = [
        SOCK_CREATE,
        SETSOCKOPT,
        DNS_EGRESS,
        DNS_INGRESS,
        "recvmsg4",
        "recvmsg6",
        "getpeername4",
        "getpeername6",
        "connect4",
        "connect6",
        "sendmsg4",
        "sendmsg6",
    ];
}

/// Limits that are not map capacities (those are in [`maps`]).
pub mod limits {
    /// How many cgroup levels the selection walk examines, from the root (level 0) down.
    /// Kubernetes pods sit at level 3–5 (deeper when nested in kind); the agent refuses entries
    /// deeper than this.
    pub const MAX_CGROUP_DEPTH: u32 = 16;
    /// Bytes in a label (a rule or policy name, a hostname), NUL-padded.
    pub const LABEL_LEN: usize = 256;
    /// Bytes of a DNS message the learning program reads (EDNS0 answers up to 4096 bytes).
    pub const DNS_MESSAGE: usize = 4096;
    /// Labels of a question name the learning program matches against the patterns.
    pub const DNS_LABELS: usize = 32;
    /// DNS query ids a socket remembers at once: stub resolvers such as c-ares (Node's
    /// `dns.resolve`, Envoy, gRPC) send many queries on one socket in parallel.
    pub const DNS_PENDING: usize = 64;
    /// Ports the learning program treats as DNS (`Config::dns_ports_be`).
    pub const DNS_PORTS: usize = 4;
}

/// Kinds of a [`CgroupEntry`].
pub mod cgroup_kind {
    /// The cgroup's tasks (and descendants') are redirected by their class's targets.
    pub const SELECTED: u32 = 1;
    /// The cgroup's tasks (and descendants') go direct, even inside a selected cgroup.
    pub const EXEMPT: u32 = 2;
}

/// Where an [`AddrValue`] came from.
pub mod source {
    /// A static address of a rule (written by the agent).
    pub const STATIC: u32 = 1;
    /// An answer the agent's own resolver got (written by the agent).
    pub const RESOLVED: u32 = 2;
    /// A DNS answer a selected workload received (written by the kernel, scoped to it).
    pub const LEARNED: u32 = 3;
    /// The marker of an address some scope learned: the `LEARNED` entry under
    /// [`crate::MARKER_SCOPE`], written after the scoped entry. A destination with neither a
    /// global entry nor a marker is passed without asking who connects.
    pub const MARKER: u32 = 4;
}

/// The scope of marker entries in `LEARNED` (no selected cgroup has id 0).
pub const MARKER_SCOPE: u64 = 0;

/// Flags in [`Target::flags`].
pub mod target_flags {
    /// Refuse the connection (`EPERM`): a fail-closed rule without a gateway, a gateway of no
    /// usable family, or QUIC to a hostname routed on TCP 443.
    pub const REFUSE: u16 = 1 << 0;
    /// The refusal is QUIC's (UDP 443 where TCP 443 is redirected), for the counters.
    pub const QUIC: u16 = 1 << 1;
}

/// Flags in [`SocketState::flags`].
pub mod socket_flags {
    /// The socket was redirected: `reverse` holds its translations.
    pub const REDIRECTED: u32 = 1 << 0;
    /// The socket sent a DNS query to a trusted resolver: its answers may be learned.
    pub const DNS: u32 = 1 << 1;
    /// `class` and `scope` hold a decision.
    pub const DECIDED: u32 = 1 << 2;
    /// An IPv6 socket set `IPV6_V6ONLY`: it reaches no IPv4 address, mapped or not.
    pub const V6ONLY: u32 = 1 << 3;
}

/// Flags in [`Config::flags`].
pub mod config_flags {
    /// Learn addresses from DNS answers.
    pub const LEARN: u32 = 1 << 0;
    /// `CIDRS` has entries (otherwise the trie lookup is skipped).
    pub const HAS_CIDRS: u32 = 1 << 1;
    /// Some learned addresses may lack their marker (the agent is removing stale markers, or
    /// has not yet checked them after starting): look up `LEARNED` under the scope whatever
    /// the marker says.
    pub const MARKERS_INCOMPLETE: u32 = 1 << 2;
}

/// Kinds of a [`LabelKey`].
pub mod label_kind {
    /// A rule's name, by rule id.
    pub const RULE: u32 = 1;
    /// A hostname pattern, by pattern id (which is also its set id).
    pub const PATTERN: u32 = 2;
    /// A destination set's label (`first-host +N`, or a rule's static addresses), by set id.
    pub const SET: u32 = 3;
}

/// Set ids: a hostname pattern's own set has the pattern's id; sets of several destinations
/// (an address two hostnames share, a rule's static addresses) are numbered from here.
pub const FIRST_COMPOSITE_SET: u32 = 1 << 24;

/// Keys of the per-set counters in `COUNTERS` (unselected tasks reaching a set) are
/// `SET_COUNTER | set`; keys below it are the targets' counter slots.
pub const SET_COUNTER: u32 = 1 << 31;

/// Indices of the global counters in the `STATS` per-CPU array.
pub mod stat {
    /// Connections and datagrams rewritten to a gateway.
    pub const REDIRECTED: u32 = 0;
    /// Connections and datagrams refused (`EPERM`).
    pub const REFUSED: u32 = 1;
    /// Routed destinations from tasks that are not selected (or are exempt): passed untouched.
    pub const UNSELECTED: u32 = 2;
    /// Refusals because no gateway of the socket's family exists.
    pub const FAMILY_MISMATCH: u32 = 3;
    /// Reply sources (recvmsg) and peer names (getpeername) restored to the original destination.
    pub const REVERSED: u32 = 4;
    /// Redirects refused because the socket's storage could not be created.
    pub const STORAGE_FAILED: u32 = 5;
    /// Addresses learned from DNS answers.
    pub const LEARNED: u32 = 6;
    /// DNS answers to selected sockets that could not be parsed (multi-segment TCP, malformed,
    /// past the parser's bounds): the agent's own resolution is the fallback.
    pub const UNPARSED: u32 = 7;
    /// DNS answers ignored: from an untrusted source, or for a query the socket did not send.
    pub const UNTRUSTED: u32 = 8;
    /// Learned addresses that could not be stored (the map is full).
    pub const LEARN_FAILED: u32 = 9;
    /// Selection walks (decision cache misses).
    pub const WALKS: u32 = 10;
    /// QUIC (UDP 443) refused where TCP 443 is redirected.
    pub const QUIC_REFUSED: u32 = 11;
    /// DNS answers matched against the patterns.
    pub const ANSWERS: u32 = 12;
    /// Number of counters.
    pub const COUNT: u32 = 13;
    /// Counter names, indexed as above; stable, used by the CLI's JSON output and the metrics.
    pub const NAMES: [&str; COUNT as usize] = [
        "redirected",
        "refused",
        "unselected",
        "family_mismatch",
        "reversed",
        "storage_failed",
        "learned",
        "unparsed",
        "untrusted",
        "learn_failed",
        "walks",
        "quic_refused",
        "answers",
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
    if is_v4_mapped(addr) {
        Some([addr[12], addr[13], addr[14], addr[15]])
    } else {
        None
    }
}

/// Whether `addr` is IPv4-mapped.
#[must_use]
pub const fn is_v4_mapped(addr: &[u8; 16]) -> bool {
    addr[0] == 0
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
}

#[cfg(test)]
#[path = "lib_tests.rs"]
mod tests;
