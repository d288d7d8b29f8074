//! Map values.

use core::mem::size_of;

use crate::limits::{DNS_PENDING, DNS_PORTS, LABEL_LEN};

/// The single entry of `CONFIG`: settings the agent writes and the programs read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct Config {
    /// Bumped by the agent after every change to `CGROUPS`: decisions cached with an older
    /// generation are computed again.
    pub generation: u64,
    /// Seed of the DNS name hash (see [`crate::name`]); chosen once per installation.
    pub name_seed: u64,
    /// How long a learned address stays after its TTL ran out, in nanoseconds.
    pub grace_ns: u64,
    /// TTLs below this are raised to it, in nanoseconds.
    pub min_ttl_ns: u64,
    /// TTLs above this are lowered to it, in nanoseconds.
    pub max_ttl_ns: u64,
    /// The ports DNS answers come from, network byte order (0: unused slot).
    pub dns_ports_be: [u16; DNS_PORTS],
    /// [`crate::config_flags`].
    pub flags: u32,
    /// Always zero.
    pub reserved: u32,
}

/// A cgroup entry in `CGROUPS`.
///
/// A hook acts for a task by the nearest ancestor of its cgroup (itself included) that has an
/// entry: selected means the entry's class decides; exempt means direct.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct CgroupEntry {
    /// One of [`crate::cgroup_kind`].
    pub kind: u32,
    /// For a selected cgroup, its routing class: the key prefix of its `TARGETS`. Tasks of one
    /// class are selected by the same rules. Zero for an exempt one.
    pub class: u32,
}

/// A decision: what a task (by its cgroup) or a socket (by its creator) is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct Decision {
    /// The `Config::generation` it was computed at.
    pub generation: u64,
    /// The cgroup id of the deciding selected entry (the scope of learned addresses); 0 when
    /// not selected.
    pub scope: u64,
    /// The routing class; 0 when not selected.
    pub class: u32,
    /// 1 when the innermost entry is exempt (a gateway's own pod): its connections to routed
    /// destinations are expected, not leaks, so they are not counted as unselected.
    pub exempt: u32,
}

/// A value of `ADDRESSES`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct AddrValue {
    /// The destination set the address belongs to.
    pub set: u32,
    /// One of [`crate::source`].
    pub source: u32,
    /// `CLOCK_MONOTONIC` nanoseconds after which the entry may go (TTL plus grace); 0: never.
    pub expires_ns: u64,
}

/// A value of `CIDRS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct CidrValue {
    /// The destination set of the prefix.
    pub set: u32,
    /// Always zero.
    pub reserved: u32,
}

/// A value of `TARGETS`: where a class sends a destination set on a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct Target {
    /// The IPv6 gateway, network byte order; all zero: none.
    pub gateway6: [u8; 16],
    /// The IPv4 gateway, network byte order; all zero: none.
    pub gateway4: [u8; 4],
    /// Gateway port, network byte order.
    pub gateway_port_be: u16,
    /// [`crate::target_flags`].
    pub flags: u16,
    /// The rule: key of its label.
    pub rule: u32,
    /// The counter slot: key of `COUNTERS`.
    pub counter: u32,
}

impl Target {
    /// Whether an IPv4 gateway is known.
    #[must_use]
    pub fn has_v4(&self) -> bool {
        self.gateway4 != [0; 4]
    }

    /// Whether an IPv6 gateway is known.
    #[must_use]
    pub fn has_v6(&self) -> bool {
        self.gateway6 != [0; 16]
    }
}

/// A value of `PATTERNS` (keyed by the name hash, see [`crate::name`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct PatternValue {
    /// The pattern's id, which is also the id of its own destination set.
    pub pattern: u32,
    /// Always zero.
    pub reserved: u32,
}

/// One reverse translation of a socket: replies from `gateway` are reported as from
/// `original`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct Reverse {
    /// The original destination; IPv4 is IPv4-mapped.
    pub original: [u8; 16],
    /// The gateway it was sent to; IPv4 is IPv4-mapped.
    pub gateway: [u8; 16],
    /// The original destination port, network byte order.
    pub original_port_be: u16,
    /// The gateway port, network byte order; 0: the slot is empty.
    pub gateway_port_be: u16,
    /// The redirecting target's counter slot.
    pub counter: u32,
}

impl Reverse {
    /// The slot of `SocketState::reverse` that holds the translation for a gateway: a socket
    /// keeps one per gateway address and port (the agent refuses UDP rules that would send two
    /// destinations to one gateway port), up to [`REVERSE_SLOTS`] gateways.
    #[inline]
    #[must_use]
    pub const fn slot(gateway: &[u8; 16], gateway_port_be: u16) -> usize {
        ((gateway[15] ^ gateway[14] ^ (gateway_port_be as u8) ^ ((gateway_port_be >> 8) as u8))
            as usize)
            % REVERSE_SLOTS
    }
}

/// Reverse translations a socket keeps (see [`Reverse::slot`]).
pub const REVERSE_SLOTS: usize = 4;

/// Per-socket state (`SOCKETS`, socket storage): freed with the socket, never evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct SocketState {
    /// The `Config::generation` the decision was computed at.
    pub generation: u64,
    /// The cgroup id of the task that created the socket.
    pub creator: u64,
    /// The decision's scope (see [`Decision::scope`]).
    pub scope: u64,
    /// The decision's class.
    pub class: u32,
    /// [`crate::socket_flags`].
    pub flags: u32,
    /// Reverse translations, by [`Reverse::slot`].
    pub reverse: [Reverse; REVERSE_SLOTS],
    /// Ids of DNS queries sent to trusted resolvers and not answered yet (a ring).
    pub dns_ids: [u16; DNS_PENDING],
    /// Where the next query id goes in `dns_ids`.
    pub dns_next: u32,
    /// Always zero.
    pub reserved: u32,
}

impl Default for SocketState {
    fn default() -> Self {
        Self {
            generation: 0,
            creator: 0,
            scope: 0,
            class: 0,
            flags: 0,
            reverse: [Reverse::default(); REVERSE_SLOTS],
            dns_ids: [0; DNS_PENDING],
            dns_next: 0,
            reserved: 0,
        }
    }
}

/// Per-CPU counters of one target (or, at `SET_COUNTER | set`, of one destination set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct Counters {
    /// Connections and datagrams rewritten to the gateway.
    pub redirected: u64,
    /// Connections and datagrams refused.
    pub refused: u64,
    /// Refusals because no gateway of the socket's family exists.
    pub family_mismatch: u64,
    /// Reply sources and peer names restored.
    pub reversed: u64,
    /// Connections to the set from tasks that are not selected (set counters only).
    pub unselected: u64,
}

/// A NUL-padded UTF-8 label (rule names, hostnames), for the CLI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct Label {
    /// The bytes, followed by NULs.
    pub bytes: [u8; LABEL_LEN],
}

impl Default for Label {
    fn default() -> Self {
        Self {
            bytes: [0; LABEL_LEN],
        }
    }
}

const _: () = assert!(size_of::<Config>() == 56);
const _: () = assert!(size_of::<CgroupEntry>() == 8);
const _: () = assert!(size_of::<Decision>() == 24);
const _: () = assert!(size_of::<AddrValue>() == 16);
const _: () = assert!(size_of::<CidrValue>() == 8);
const _: () = assert!(size_of::<Target>() == 32);
const _: () = assert!(size_of::<PatternValue>() == 8);
const _: () = assert!(size_of::<Reverse>() == 40);
const _: () = assert!(size_of::<SocketState>() == 328);
const _: () = assert!(size_of::<Counters>() == 40);
const _: () = assert!(size_of::<Label>() == LABEL_LEN);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data with no padding; every bit pattern is valid.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CgroupEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Decision {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AddrValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CidrValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Target {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PatternValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SocketState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Reverse {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Label {}
}
