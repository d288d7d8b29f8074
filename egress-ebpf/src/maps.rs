//! The maps, shared with userspace through egress-common; all pinned by name.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use egress_common::{
    CgroupMode, HostLabel, RevNatKey, RevNatValue, RouteKey4, RouteKey6, RouteValue, RuleName,
    limits,
};

use egress_common::map_flags::{NO_COMMON_LRU, NO_PREALLOC};

#[map]
pub(crate) static ROUTES_V4: LpmTrie<RouteKey4, RouteValue> =
    LpmTrie::pinned(limits::MAX_ROUTES_V4, 0);

#[map]
pub(crate) static ROUTES_V6: LpmTrie<RouteKey6, RouteValue> =
    LpmTrie::pinned(limits::MAX_ROUTES_V6, 0);

#[map]
pub(crate) static CGROUPS: HashMap<u64, CgroupMode> = HashMap::pinned(limits::MAX_CGROUPS, 0);

#[map]
pub(crate) static ROUTE_STATS: PerCpuHashMap<u32, u64> =
    PerCpuHashMap::pinned(limits::MAX_ROUTE_STATS, NO_PREALLOC);

#[map]
pub(crate) static STATS: PerCpuArray<u64> = PerCpuArray::pinned(egress_common::stat::COUNT, 0);

#[map]
pub(crate) static REVNAT: LruHashMap<RevNatKey, RevNatValue> =
    LruHashMap::pinned(limits::MAX_REVNAT, NO_COMMON_LRU);

/// Written by userspace only (rule id → name, for the CLI); declared here so that it is created
/// and pinned together with the other maps.
#[map]
pub(crate) static RULE_NAMES: HashMap<u32, RuleName> = HashMap::pinned(limits::MAX_RULES, 0);

/// Written by userspace only (route id → hostname label, for the CLI); pinned with the others.
#[map]
pub(crate) static ROUTE_HOSTS: HashMap<u32, HostLabel> =
    HashMap::pinned(limits::MAX_ROUTE_STATS, NO_PREALLOC);

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
