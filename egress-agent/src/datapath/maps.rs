//! Typed access to the pinned maps, shared by the agent and the CLI. Keys and values go through
//! [`super::codec`].

use std::collections::{BTreeMap, HashMap};

use aya::maps::{
    HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues,
    lpm_trie::LpmTrie,
};
use egress_common::{
    CgroupMode, HostLabel, RouteKey4, RouteKey6, RouteValue, RuleName,
    maps::{self as defs, MapDef},
    stat,
};

use super::{
    DatapathError,
    codec::{self, TrieKey},
};
use crate::{
    bpffs::PinDir,
    route::{Groups, Mode, RouteMatch, RouteTarget},
};

/// The pinned maps, opened.
pub struct Maps {
    routes_v4: LpmTrie<MapData, RouteKey4, RouteValue>,
    routes_v6: LpmTrie<MapData, RouteKey6, RouteValue>,
    cgroups: BpfHashMap<MapData, u64, CgroupMode>,
    route_stats: PerCpuHashMap<MapData, u32, u64>,
    stats: PerCpuArray<MapData, u64>,
    rule_names: BpfHashMap<MapData, u32, RuleName>,
    route_hosts: BpfHashMap<MapData, u32, HostLabel>,
    /// Possible CPUs: the length of every per-CPU value.
    cpus: usize,
}

/// A route as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// What it matches.
    pub route: RouteMatch,
    /// Where it sends connections.
    pub target: RouteTarget,
    /// Its rule: key of the rule names.
    pub rule_id: u32,
    /// Its counter and host label: key of the route counters and host labels.
    pub route_id: u32,
    /// The selection groups it applies to.
    pub groups: Groups,
}

impl RouteEntry {
    fn from_value(route: RouteMatch, value: &RouteValue) -> Self {
        Self {
            route,
            target: codec::target_of(value),
            rule_id: value.rule_id,
            route_id: value.route_id,
            groups: value.groups,
        }
    }

    fn value(&self) -> RouteValue {
        codec::route_value(&self.target, self.rule_id, self.route_id, self.groups)
    }
}

fn open(pins: &PinDir, def: MapDef) -> Result<Map, DatapathError> {
    let path = pins.map(def.name);
    if !path.exists() {
        return Err(DatapathError::NotInstalled { path: pins.maps() });
    }
    let data = MapData::from_pin(&path).map_err(DatapathError::map(def.name))?;
    Map::from_map_data(data).map_err(DatapathError::map(def.name))
}

macro_rules! typed {
    ($pins:expr, $def:expr) => {
        open($pins, $def)?
            .try_into()
            .map_err(DatapathError::map($def.name))?
    };
}

impl Maps {
    /// Opens the maps pinned under `pins`.
    pub fn open(pins: &PinDir) -> Result<Self, DatapathError> {
        Ok(Self {
            routes_v4: typed!(pins, defs::ROUTES_V4),
            routes_v6: typed!(pins, defs::ROUTES_V6),
            cgroups: typed!(pins, defs::CGROUPS),
            route_stats: typed!(pins, defs::ROUTE_STATS),
            stats: typed!(pins, defs::STATS),
            rule_names: typed!(pins, defs::RULE_NAMES),
            route_hosts: typed!(pins, defs::ROUTE_HOSTS),
            cpus: aya::util::nr_cpus()
                .map_err(|(_, source)| DatapathError::PossibleCpus { source })?,
        })
    }

    /// Every installed route, IPv4 first.
    pub fn routes(&self) -> Result<Vec<RouteEntry>, DatapathError> {
        let mut entries = Vec::new();
        for item in &self.routes_v4 {
            let (key, value) = item.map_err(DatapathError::map(defs::ROUTES_V4.name))?;
            if let Some(route) = codec::route_of_v4(&key) {
                entries.push(RouteEntry::from_value(route, &value));
            }
        }
        for item in &self.routes_v6 {
            let (key, value) = item.map_err(DatapathError::map(defs::ROUTES_V6.name))?;
            if let Some(route) = codec::route_of_v6(&key) {
                entries.push(RouteEntry::from_value(route, &value));
            }
        }
        Ok(entries)
    }

    /// Installs or replaces a route.
    pub fn put_route(&mut self, entry: &RouteEntry) -> Result<(), DatapathError> {
        let value = entry.value();
        match codec::trie_key(&entry.route) {
            TrieKey::V4(key) => self
                .routes_v4
                .insert(&key, value, 0)
                .map_err(|err| full_or(err, defs::ROUTES_V4)),
            TrieKey::V6(key) => self
                .routes_v6
                .insert(&key, value, 0)
                .map_err(|err| full_or(err, defs::ROUTES_V6)),
        }
    }

    /// Removes a route.
    pub fn delete_route(&mut self, route: &RouteMatch) -> Result<(), DatapathError> {
        match codec::trie_key(route) {
            TrieKey::V4(key) => self
                .routes_v4
                .remove(&key)
                .map_err(DatapathError::map(defs::ROUTES_V4.name)),
            TrieKey::V6(key) => self
                .routes_v6
                .remove(&key)
                .map_err(DatapathError::map(defs::ROUTES_V6.name)),
        }
    }

    /// Creates (or resets to zero) the counter of a route.
    pub fn reset_route_counter(&mut self, route_id: u32) -> Result<(), DatapathError> {
        let zeros = PerCpuValues::try_from(vec![0_u64; self.cpus])
            .map_err(|source| DatapathError::PossibleCpus { source })?;
        self.route_stats
            .insert(route_id, zeros, 0)
            .map_err(DatapathError::map(defs::ROUTE_STATS.name))
    }

    /// Removes the counter of a route.
    pub fn delete_route_counter(&mut self, route_id: u32) -> Result<(), DatapathError> {
        ignore_missing(self.route_stats.remove(&route_id))
            .map_err(DatapathError::map(defs::ROUTE_STATS.name))
    }

    /// Redirect counts by route id, summed over CPUs.
    pub fn route_counts(&self) -> Result<HashMap<u32, u64>, DatapathError> {
        let mut counts = HashMap::new();
        for item in &self.route_stats {
            let (id, values) = item.map_err(DatapathError::map(defs::ROUTE_STATS.name))?;
            counts.insert(id, values.iter().sum());
        }
        Ok(counts)
    }

    /// The global counters, summed over CPUs, in [`stat::NAMES`] order.
    pub fn stats(&self) -> Result<Vec<(&'static str, u64)>, DatapathError> {
        let mut out = Vec::new();
        for (index, name) in (0..stat::COUNT).zip(stat::NAMES) {
            let values = self
                .stats
                .get(&index, 0)
                .map_err(DatapathError::map(defs::STATS.name))?;
            out.push((name, values.iter().sum()));
        }
        Ok(out)
    }

    /// Cgroup entries; an entry no agent would write reads as `None`.
    pub fn cgroups(&self) -> Result<BTreeMap<u64, Option<Mode>>, DatapathError> {
        let mut out = BTreeMap::new();
        for item in &self.cgroups {
            let (id, mode) = item.map_err(DatapathError::map(defs::CGROUPS.name))?;
            out.insert(id, codec::mode_of(mode));
        }
        Ok(out)
    }

    /// Sets a cgroup entry.
    pub fn put_cgroup(&mut self, id: u64, mode: Mode) -> Result<(), DatapathError> {
        self.cgroups
            .insert(id, codec::mode_value(mode), 0)
            .map_err(DatapathError::map(defs::CGROUPS.name))
    }

    /// Removes a cgroup entry.
    pub fn delete_cgroup(&mut self, id: u64) -> Result<(), DatapathError> {
        ignore_missing(self.cgroups.remove(&id)).map_err(DatapathError::map(defs::CGROUPS.name))
    }

    /// Rule names by id.
    pub fn rule_names(&self) -> Result<BTreeMap<u32, String>, DatapathError> {
        let mut out = BTreeMap::new();
        for item in &self.rule_names {
            let (id, name) = item.map_err(DatapathError::map(defs::RULE_NAMES.name))?;
            out.insert(id, codec::rule_name_of(&name));
        }
        Ok(out)
    }

    /// Sets a rule name (cut to the field, see [`codec::stored_rule_name`]).
    pub fn put_rule_name(&mut self, id: u32, name: &str) -> Result<(), DatapathError> {
        self.rule_names
            .insert(id, codec::rule_name_value(name), 0)
            .map_err(DatapathError::map(defs::RULE_NAMES.name))
    }

    /// Removes a rule name.
    pub fn delete_rule_name(&mut self, id: u32) -> Result<(), DatapathError> {
        ignore_missing(self.rule_names.remove(&id))
            .map_err(DatapathError::map(defs::RULE_NAMES.name))
    }
}

impl Maps {
    /// Host labels by route id.
    pub fn host_labels(&self) -> Result<BTreeMap<u32, String>, DatapathError> {
        let mut out = BTreeMap::new();
        for item in &self.route_hosts {
            let (id, label) = item.map_err(DatapathError::map(defs::ROUTE_HOSTS.name))?;
            out.insert(id, codec::host_label_of(&label));
        }
        Ok(out)
    }

    /// Sets the host label of a route.
    pub fn put_host_label(&mut self, route_id: u32, label: &str) -> Result<(), DatapathError> {
        self.route_hosts
            .insert(route_id, codec::host_label_value(label), 0)
            .map_err(DatapathError::map(defs::ROUTE_HOSTS.name))
    }

    /// Removes the host label of a route.
    pub fn delete_host_label(&mut self, route_id: u32) -> Result<(), DatapathError> {
        ignore_missing(self.route_hosts.remove(&route_id))
            .map_err(DatapathError::map(defs::ROUTE_HOSTS.name))
    }
}

fn full_or(err: aya::maps::MapError, def: MapDef) -> DatapathError {
    if let aya::maps::MapError::SyscallError(syscall) = &err
        && matches!(
            syscall.io_error.raw_os_error(),
            Some(libc::ENOSPC | libc::E2BIG)
        )
    {
        return DatapathError::RoutesFull {
            map: def.name,
            capacity: def.max_entries,
            dropped: 1,
        };
    }
    DatapathError::map(def.name)(err)
}

fn ignore_missing(result: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(syscall))
            if syscall.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
}
