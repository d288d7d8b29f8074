//! Every map's definition: name, type, key and value sizes, capacity and flags.
//!
//! The eBPF programs declare their maps from these definitions and the agent checks pinned maps
//! against them, so the two sides cannot drift apart. Changing a definition changes the pinned
//! map's definition, so the agent recreates the map.

use core::mem::size_of;

use crate::{
    CgroupMode, HostLabel, RevNatKey, RevNatValue, RouteKey4, RouteKey6, RouteValue, RuleName,
};

/// The kind of a map (`enum bpf_map_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MapKind {
    /// `BPF_MAP_TYPE_HASH`.
    Hash = 1,
    /// `BPF_MAP_TYPE_PERCPU_HASH`.
    PerCpuHash = 5,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`.
    PerCpuArray = 6,
    /// `BPF_MAP_TYPE_LRU_HASH`.
    LruHash = 9,
    /// `BPF_MAP_TYPE_LPM_TRIE`.
    LpmTrie = 11,
}

/// One map's definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapDef {
    /// The name: the symbol in the object and the pin's file name.
    pub name: &'static str,
    /// The map type.
    pub kind: MapKind,
    /// Key size in bytes, as the kernel sees it (an LPM trie key includes its 4-byte prefix
    /// length).
    pub key_size: u32,
    /// Value size in bytes (per CPU for per-CPU maps).
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// `map_flags` the map is created with, including those the eBPF library adds for its
    /// type (`BPF_F_NO_PREALLOC` for LPM tries).
    pub flags: u32,
}

impl MapDef {
    /// Whether a map the kernel describes this way is this map. The kernel rounds a per-CPU-list
    /// LRU's capacity up to a multiple of the possible CPUs, so for it "at least" is the match.
    #[must_use]
    pub const fn matches(
        &self,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        flags: u32,
    ) -> bool {
        let capacity_ok = if self.flags & flags::NO_COMMON_LRU == 0 {
            max_entries == self.max_entries
        } else {
            max_entries >= self.max_entries
        };
        key_size == self.key_size
            && value_size == self.value_size
            && capacity_ok
            && flags == self.flags
    }
}

/// `map_flags` values.
pub mod flags {
    /// `BPF_F_NO_PREALLOC`: LPM tries (required) and the route counters.
    pub const NO_PREALLOC: u32 = 1;
    /// `BPF_F_NO_COMMON_LRU`: per-CPU LRU lists for the reverse-NAT map, so an insert into a
    /// full map evicts without the global LRU lock (every TCP redirect inserts).
    pub const NO_COMMON_LRU: u32 = 1 << 1;
}

const fn size<T>() -> u32 {
    size_of::<T>() as u32
}

/// Bytes of an LPM trie key's prefix length.
const PREFIX_LEN: u32 = 4;

/// LPM trie of IPv4 routes: [`RouteKey4`] → [`RouteValue`].
pub const ROUTES_V4: MapDef = MapDef {
    name: "ROUTES_V4",
    kind: MapKind::LpmTrie,
    key_size: PREFIX_LEN + size::<RouteKey4>(),
    value_size: size::<RouteValue>(),
    max_entries: 131_072,
    flags: flags::NO_PREALLOC,
};

/// LPM trie of IPv6 routes: [`RouteKey6`] → [`RouteValue`].
pub const ROUTES_V6: MapDef = MapDef {
    name: "ROUTES_V6",
    kind: MapKind::LpmTrie,
    key_size: PREFIX_LEN + size::<RouteKey6>(),
    value_size: size::<RouteValue>(),
    max_entries: 65_536,
    flags: flags::NO_PREALLOC,
};

/// Hash of cgroup id (`u64`) → [`CgroupMode`].
pub const CGROUPS: MapDef = MapDef {
    name: "CGROUPS",
    kind: MapKind::Hash,
    key_size: size::<u64>(),
    value_size: size::<CgroupMode>(),
    max_entries: 65_536,
    flags: 0,
};

/// Per-CPU hash of route id (`u32`) → redirect count (`u64`): one per route of either family.
pub const ROUTE_STATS: MapDef = MapDef {
    name: "ROUTE_STATS",
    kind: MapKind::PerCpuHash,
    key_size: size::<u32>(),
    value_size: size::<u64>(),
    max_entries: ROUTES_V4.max_entries + ROUTES_V6.max_entries,
    flags: flags::NO_PREALLOC,
};

/// Per-CPU array of global counters (`u64`) indexed by [`crate::stat`].
pub const STATS: MapDef = MapDef {
    name: "STATS",
    kind: MapKind::PerCpuArray,
    key_size: size::<u32>(),
    value_size: size::<u64>(),
    max_entries: crate::stat::COUNT,
    flags: 0,
};

/// LRU hash of [`RevNatKey`] → [`RevNatValue`], for recvmsg/getpeername.
pub const REVNAT: MapDef = MapDef {
    name: "REVNAT",
    kind: MapKind::LruHash,
    key_size: size::<RevNatKey>(),
    value_size: size::<RevNatValue>(),
    max_entries: 131_072,
    flags: flags::NO_COMMON_LRU,
};

/// Hash of rule id (`u32`) → [`RuleName`]; written by userspace only, for the CLI.
pub const RULE_NAMES: MapDef = MapDef {
    name: "RULE_NAMES",
    kind: MapKind::Hash,
    key_size: size::<u32>(),
    value_size: size::<RuleName>(),
    max_entries: 4_096,
    flags: 0,
};

/// Hash of route id (`u32`) → [`HostLabel`]: the hostname(s) that brought a route in;
/// written by userspace only, for the CLI.
pub const ROUTE_HOSTS: MapDef = MapDef {
    name: "ROUTE_HOSTS",
    kind: MapKind::Hash,
    key_size: size::<u32>(),
    value_size: size::<HostLabel>(),
    max_entries: ROUTE_STATS.max_entries,
    flags: flags::NO_PREALLOC,
};

/// Every map, in the order the agent pins them.
pub const ALL: [MapDef; 8] = [
    ROUTES_V4,
    ROUTES_V6,
    CGROUPS,
    ROUTE_STATS,
    STATS,
    REVNAT,
    RULE_NAMES,
    ROUTE_HOSTS,
];
