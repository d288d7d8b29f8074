//! The maps, declared from their definitions in egress-common (which the agent checks pinned
//! maps against); all pinned by name.
//!
//! The eBPF library adds the flags a map type requires (`BPF_F_NO_PREALLOC` for LPM tries)
//! itself; the definitions list them too, because that is what the kernel reports.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use egress_common::{
    CgroupMode, HostLabel, RevNatKey, RevNatValue, RouteKey4, RouteKey6, RouteValue, RuleName,
    maps::{self as defs, MapDef},
};

#[map]
pub(crate) static ROUTES_V4: LpmTrie<RouteKey4, RouteValue> =
    LpmTrie::pinned(defs::ROUTES_V4.max_entries, extra(defs::ROUTES_V4));

#[map]
pub(crate) static ROUTES_V6: LpmTrie<RouteKey6, RouteValue> =
    LpmTrie::pinned(defs::ROUTES_V6.max_entries, extra(defs::ROUTES_V6));

#[map]
pub(crate) static CGROUPS: HashMap<u64, CgroupMode> =
    HashMap::pinned(defs::CGROUPS.max_entries, defs::CGROUPS.flags);

#[map]
pub(crate) static ROUTE_STATS: PerCpuHashMap<u32, u64> =
    PerCpuHashMap::pinned(defs::ROUTE_STATS.max_entries, defs::ROUTE_STATS.flags);

#[map]
pub(crate) static STATS: PerCpuArray<u64> =
    PerCpuArray::pinned(defs::STATS.max_entries, defs::STATS.flags);

#[map]
pub(crate) static REVNAT: LruHashMap<RevNatKey, RevNatValue> =
    LruHashMap::pinned(defs::REVNAT.max_entries, defs::REVNAT.flags);

/// Written by userspace only (rule id → name, for the CLI); declared here so that it is created
/// and pinned together with the other maps.
#[map]
pub(crate) static RULE_NAMES: HashMap<u32, RuleName> =
    HashMap::pinned(defs::RULE_NAMES.max_entries, defs::RULE_NAMES.flags);

/// Written by userspace only (route id → hostname label, for the CLI); pinned with the others.
#[map]
pub(crate) static ROUTE_HOSTS: HashMap<u32, HostLabel> =
    HashMap::pinned(defs::ROUTE_HOSTS.max_entries, defs::ROUTE_HOSTS.flags);

/// The flags of `def` that the eBPF library does not add itself for LPM tries.
const fn extra(def: MapDef) -> u32 {
    def.flags & !defs::flags::NO_PREALLOC
}

/// Adds one to a global counter.
#[inline(always)]
pub(crate) fn count(index: u32) {
    if let Some(counter) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, valid for the duration of the program; no other writer on
        // this CPU while we run.
        unsafe { *counter += 1 };
    }
}

/// Adds one to a route's counter.
#[inline(always)]
pub(crate) fn count_route(route_id: u32) {
    if let Some(counter) = ROUTE_STATS.get_ptr_mut(route_id) {
        // SAFETY: as in `count`.
        unsafe { *counter += 1 };
    }
}
