//! Every map's definition: name, type, key and value sizes, capacity and flags.
//!
//! The eBPF programs declare their maps from these definitions and the agent checks pinned maps
//! against them, so the two sides cannot drift apart. A change here is a change of the ABI:
//! bump [`crate::ABI_VERSION`] and [`FINGERPRINT`] (a unit test insists).

use core::mem::size_of;

use crate::{
    AddrKey, AddrValue, CgroupEntry, CidrValue, Config, Counters, Decision, Label, LabelKey,
    PatternValue, ResolvedKey, ResolverKey, SocketState, Target, TargetKey,
};

/// The kind of a map (`enum bpf_map_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MapKind {
    /// `BPF_MAP_TYPE_HASH`.
    Hash = 1,
    /// `BPF_MAP_TYPE_ARRAY`.
    Array = 2,
    /// `BPF_MAP_TYPE_PROG_ARRAY`.
    ProgramArray = 3,
    /// `BPF_MAP_TYPE_PERCPU_HASH`.
    PerCpuHash = 5,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`.
    PerCpuArray = 6,
    /// `BPF_MAP_TYPE_LRU_HASH`.
    LruHash = 9,
    /// `BPF_MAP_TYPE_LPM_TRIE`.
    LpmTrie = 11,
    /// `BPF_MAP_TYPE_SK_STORAGE`.
    SkStorage = 24,
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
    /// Capacity (0 for socket storage, which has one value per socket).
    pub max_entries: u32,
    /// `map_flags` the map is created with, including those the eBPF library adds for its
    /// type (`BPF_F_NO_PREALLOC` for LPM tries and socket storage).
    pub flags: u32,
    /// Whether the kernel writes it (and so a new layout must migrate it rather than fill it).
    pub kernel_written: bool,
}

impl MapDef {
    /// Whether a map the kernel describes this way is this map.
    #[must_use]
    pub const fn matches(
        &self,
        kind: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        flags: u32,
    ) -> bool {
        kind == self.kind as u32
            && key_size == self.key_size
            && value_size == self.value_size
            && max_entries == self.max_entries
            && flags == self.flags
    }
}

/// `map_flags` values.
pub mod flags {
    /// `BPF_F_NO_PREALLOC`: memory is taken as entries are added.
    pub const NO_PREALLOC: u32 = 1;
}

const fn size<T>() -> u32 {
    size_of::<T>() as u32
}

/// Bytes of an LPM trie key's prefix length.
const PREFIX_LEN: u32 = 4;

/// Settings the programs read: [`Config`] at index 0.
pub const CONFIG: MapDef = MapDef {
    name: "CONFIG",
    kind: MapKind::Array,
    key_size: size::<u32>(),
    value_size: size::<Config>(),
    max_entries: 1,
    flags: 0,
    kernel_written: false,
};

/// Cgroup id (`u64`) → [`CgroupEntry`]: selected and exempt cgroups.
pub const CGROUPS: MapDef = MapDef {
    name: "CGROUPS",
    kind: MapKind::Hash,
    key_size: size::<u64>(),
    value_size: size::<CgroupEntry>(),
    max_entries: 65_536,
    flags: 0,
    kernel_written: false,
};

/// Leaf cgroup id (`u64`) → [`Decision`]: the selection walk's result, cached by the programs.
pub const DECISIONS: MapDef = MapDef {
    name: "DECISIONS",
    kind: MapKind::LruHash,
    key_size: size::<u64>(),
    value_size: size::<Decision>(),
    max_entries: 65_536,
    flags: 0,
    kernel_written: true,
};

/// Address (`[u8; 16]`, IPv4 mapped) → [`AddrValue`]: static and resolved addresses, for every
/// workload, with their sets (written by the agent).
pub const ADDRESSES: MapDef = MapDef {
    name: "ADDRESSES",
    kind: MapKind::Hash,
    key_size: 16,
    value_size: size::<AddrValue>(),
    max_entries: 1 << 21,
    flags: flags::NO_PREALLOC,
    kernel_written: false,
};

/// [`AddrKey`] → [`AddrValue`]: addresses learned from the DNS answers a selected entry's
/// workloads received, seen by that entry's tasks only (written by the kernel, expired by the
/// agent).
pub const LEARNED: MapDef = MapDef {
    name: "LEARNED",
    kind: MapKind::Hash,
    key_size: size::<AddrKey>(),
    value_size: size::<AddrValue>(),
    max_entries: 1 << 20,
    flags: flags::NO_PREALLOC,
    kernel_written: true,
};

/// LPM trie of IPv6 (or IPv4-mapped) prefixes → [`CidrValue`]: static CIDRs.
pub const CIDRS: MapDef = MapDef {
    name: "CIDRS",
    kind: MapKind::LpmTrie,
    key_size: PREFIX_LEN + 16,
    value_size: size::<CidrValue>(),
    max_entries: 65_536,
    flags: flags::NO_PREALLOC,
    kernel_written: false,
};

/// [`TargetKey`] → [`Target`]: per class, where each destination set goes on each port.
pub const TARGETS: MapDef = MapDef {
    name: "TARGETS",
    kind: MapKind::Hash,
    key_size: size::<TargetKey>(),
    value_size: size::<Target>(),
    max_entries: 1 << 19,
    flags: flags::NO_PREALLOC,
    kernel_written: false,
};

/// Name hash (`u64`, see [`crate::name`]) → [`PatternValue`]: hostnames and wildcards to learn.
pub const PATTERNS: MapDef = MapDef {
    name: "PATTERNS",
    kind: MapKind::Hash,
    key_size: size::<u64>(),
    value_size: size::<PatternValue>(),
    max_entries: 65_536,
    flags: flags::NO_PREALLOC,
    kernel_written: false,
};

/// [`ResolverKey`] → `u32` (unused, 0): the resolvers whose answers are learned.
pub const TRUSTED: MapDef = MapDef {
    name: "TRUSTED",
    kind: MapKind::Hash,
    key_size: size::<ResolverKey>(),
    value_size: size::<u32>(),
    max_entries: 256,
    flags: 0,
    kernel_written: false,
};

/// Socket storage: [`SocketState`] per socket.
pub const SOCKETS: MapDef = MapDef {
    name: "SOCKETS",
    kind: MapKind::SkStorage,
    key_size: size::<i32>(),
    value_size: size::<SocketState>(),
    max_entries: 0,
    flags: flags::NO_PREALLOC,
    kernel_written: true,
};

/// Per-CPU counter slot (`u32`) → [`Counters`] (entries created by the agent).
pub const COUNTERS: MapDef = MapDef {
    name: "COUNTERS",
    kind: MapKind::PerCpuHash,
    key_size: size::<u32>(),
    value_size: size::<Counters>(),
    max_entries: 1 << 18,
    flags: flags::NO_PREALLOC,
    kernel_written: true,
};

/// Per-CPU array of global counters (`u64`) indexed by [`crate::stat`].
pub const STATS: MapDef = MapDef {
    name: "STATS",
    kind: MapKind::PerCpuArray,
    key_size: size::<u32>(),
    value_size: size::<u64>(),
    max_entries: crate::stat::COUNT,
    flags: 0,
    kernel_written: true,
};

/// Per-CPU scratch space (index 0) where the learning programs copy a DNS message, keep the
/// question's label hashes (a `u64` per label, up to [`crate::limits::DNS_LABELS`]) and hand
/// the parse on from one tail call to the next ([`SCRATCH_STATE`] bytes).
pub const SCRATCH: MapDef = MapDef {
    name: "SCRATCH",
    kind: MapKind::PerCpuArray,
    key_size: size::<u32>(),
    value_size: (crate::limits::DNS_MESSAGE + 8 * crate::limits::DNS_LABELS + SCRATCH_STATE) as u32,
    max_entries: 1,
    flags: 0,
    kernel_written: false,
};

/// Bytes of the parse state in [`SCRATCH`].
pub const SCRATCH_STATE: usize = 48;

/// Program array (index 0: [`crate::programs::DNS_ANSWERS`]): the learning program reads an
/// answer's records in tail calls, a few per call, so that each program stays within the 5.10
/// verifier's budget.
pub const ANSWERS: MapDef = MapDef {
    name: "ANSWERS",
    kind: MapKind::ProgramArray,
    key_size: size::<u32>(),
    value_size: size::<u32>(),
    max_entries: 1,
    flags: 0,
    kernel_written: false,
};

/// [`LabelKey`] → [`Label`]: names of rules, patterns and sets, for the CLI and for restarts.
pub const LABELS: MapDef = MapDef {
    name: "LABELS",
    kind: MapKind::Hash,
    key_size: size::<LabelKey>(),
    value_size: size::<Label>(),
    max_entries: 1 << 18,
    flags: flags::NO_PREALLOC,
    kernel_written: false,
};

/// [`ResolvedKey`] → expiry (`u64`, `CLOCK_MONOTONIC` ns): the agent resolver's answers, kept
/// so that a restart knows them.
pub const RESOLVED: MapDef = MapDef {
    name: "RESOLVED",
    kind: MapKind::Hash,
    key_size: size::<ResolvedKey>(),
    value_size: size::<u64>(),
    max_entries: 1 << 20,
    flags: flags::NO_PREALLOC,
    kernel_written: false,
};

/// Every map, in the order the agent pins them.
pub const ALL: [MapDef; 16] = [
    CONFIG, CGROUPS, DECISIONS, ADDRESSES, LEARNED, CIDRS, TARGETS, PATTERNS, TRUSTED, SOCKETS,
    COUNTERS, STATS, SCRATCH, ANSWERS, LABELS, RESOLVED,
];

/// A digest of map definitions: names, kinds, sizes, capacities and flags.
#[must_use]
pub const fn digest(defs: &[MapDef]) -> u64 {
    let mut hash = crate::name::label_start();
    let mut index = 0;
    while index < defs.len() {
        let def = &defs[index];
        let name = def.name.as_bytes();
        let mut byte = 0;
        while byte < name.len() {
            hash = crate::name::label_step(hash, name[byte]);
            byte += 1;
        }
        let numbers = [
            def.kind as u32,
            def.key_size,
            def.value_size,
            def.max_entries,
            def.flags,
            def.kernel_written as u32,
        ];
        let mut number = 0;
        while number < numbers.len() {
            hash = crate::name::combine(hash, numbers[number] as u64);
            number += 1;
        }
        index += 1;
    }
    hash
}
