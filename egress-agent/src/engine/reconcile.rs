//! Writes desired state into the maps by diff against what the agent installed (read from the
//! maps once, then kept in memory, so a resync with a million addresses costs a comparison,
//! not a million map reads).
//!
//! The order keeps every lookup complete at every moment:
//!
//! 1. names, patterns, trusted resolvers and counter slots the new entries refer to;
//! 2. targets, then prefixes and addresses (a set's targets exist before an address points to
//!    it);
//! 3. cgroups: stale entries first (so a full map recovers), then new and changed ones, then
//!    the generation that makes cached decisions be computed again;
//! 4. removals of what nothing refers to any more;
//! 5. when a map was full, steps 2 and 3 again: the removals made room, so a map filled with
//!    entries that are being replaced recovers in one reconcile (additions still come before
//!    removals, so nothing desired is ever missing while there is room).

use std::collections::{BTreeMap, BTreeSet};

use egress_common::Config;
use tracing::warn;

use super::desired::{Desired, Settings};
use crate::{
    datapath::{DatapathError, Maps},
    route::{AddrEntry, Entry, Target, TargetKey},
};

/// What the agent has written to the maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Installed {
    pub(crate) config: Config,
    pub(crate) cgroups: BTreeMap<u64, Entry>,
    pub(crate) addresses: BTreeMap<std::net::IpAddr, AddrEntry>,
    pub(crate) cidrs: BTreeMap<ipnet::IpNet, u32>,
    pub(crate) targets: BTreeMap<TargetKey, Target>,
    pub(crate) patterns: BTreeMap<u64, u32>,
    pub(crate) trusted: BTreeSet<std::net::SocketAddr>,
    pub(crate) labels: BTreeMap<(u32, u32), String>,
    pub(crate) counters: BTreeSet<u32>,
    /// Every learned address has its marker (checked since this agent started); until then
    /// `CONFIG` carries `MARKERS_INCOMPLETE`.
    pub(crate) markers_complete: bool,
}

impl Installed {
    /// Reads what the maps hold.
    pub(crate) fn read(maps: &Maps) -> Result<Self, DatapathError> {
        let mut labels = BTreeMap::new();
        for kind in [
            egress_common::label_kind::RULE,
            egress_common::label_kind::PATTERN,
            egress_common::label_kind::SET,
        ] {
            for (id, text) in maps.labels(kind)? {
                labels.insert((kind, id), text);
            }
        }
        Ok(Self {
            config: maps.config()?,
            cgroups: maps
                .cgroups()?
                .into_iter()
                .filter_map(|(id, entry)| Some((id, entry?)))
                .collect(),
            addresses: maps.addresses()?,
            cidrs: maps.cidrs()?,
            targets: maps.targets()?,
            patterns: maps.patterns()?,
            trusted: maps.trusted()?.into_iter().collect(),
            labels,
            counters: maps.counters()?.into_keys().collect(),
            markers_complete: false,
        })
    }
}

/// What a reconcile changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Addresses and prefixes added, changed or removed.
    pub(crate) addresses: usize,
    /// Targets added, changed or removed.
    pub(crate) targets: usize,
    /// Cgroup entries added, changed or removed.
    pub(crate) cgroups: usize,
    /// Other entries (names, patterns, resolvers, counters, settings).
    pub(crate) other: usize,
}

impl Changes {
    /// Whether anything changed.
    pub(crate) fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// Entries that did not fit in their map.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A map is full even after the removals: what fit is installed.
    #[error(
        "map {map} is full ({capacity} entries): {dropped} entries were not installed; remove rules or addresses"
    )]
    Full {
        /// The map.
        map: &'static str,
        /// Its capacity.
        capacity: u32,
        /// Entries that did not fit.
        dropped: usize,
    },
    /// Any other map operation failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
}

/// Brings the maps from `installed` to `desired` (updating `installed` as it goes).
pub(crate) fn reconcile(
    maps: &mut Maps,
    installed: &mut Installed,
    desired: &Desired,
    name_seed: u64,
) -> Result<Changes, ReconcileError> {
    let mut changes = Changes::default();
    let mut full = Overflow::default();
    referenced(maps, installed, desired, &mut changes)?;
    pointing(maps, installed, desired, &mut changes, &mut full)?;
    cgroups(maps, installed, desired, name_seed, &mut changes, &mut full)?;
    removals(maps, installed, desired, &mut changes)?;
    if full.first.is_some() {
        // A full map: the removals made room (what is no longer desired went), so what did
        // not fit goes in now, in the same reconcile. Only a map that is still full fails.
        full = Overflow::default();
        pointing(maps, installed, desired, &mut changes, &mut full)?;
        cgroups(maps, installed, desired, name_seed, &mut changes, &mut full)?;
    }
    full.result(changes)
}

/// The first map found full, and how many entries did not fit.
#[derive(Default)]
struct Overflow {
    first: Option<(&'static str, u32)>,
    dropped: usize,
}

impl Overflow {
    /// Notes a full map; any other error stops the reconcile.
    fn note(&mut self, err: DatapathError) -> Result<(), ReconcileError> {
        match err {
            DatapathError::Full { map, capacity } => {
                self.dropped += 1;
                self.first.get_or_insert((map, capacity));
                Ok(())
            }
            other => Err(other.into()),
        }
    }

    fn result(self, changes: Changes) -> Result<Changes, ReconcileError> {
        match self.first {
            Some((map, capacity)) => {
                warn!(map, capacity, dropped = self.dropped, "map is full");
                Err(ReconcileError::Full {
                    map,
                    capacity,
                    dropped: self.dropped,
                })
            }
            None => Ok(changes),
        }
    }
}

/// 1. What new entries refer to: labels, patterns, trusted resolvers, counter slots.
fn referenced(
    maps: &mut Maps,
    installed: &mut Installed,
    desired: &Desired,
    changes: &mut Changes,
) -> Result<(), DatapathError> {
    changes.other += upsert(
        &mut installed.labels,
        &desired.labels,
        |&(kind, id), text| maps.put_label(kind, id, text),
    )?;
    changes.other += upsert(&mut installed.patterns, &desired.patterns, |hash, id| {
        maps.put_pattern(*hash, *id)
    })?;
    for resolver in desired.trusted.difference(&installed.trusted.clone()) {
        maps.put_trusted(*resolver)?;
        installed.trusted.insert(*resolver);
        changes.other += 1;
    }
    for slot in desired.counters.difference(&installed.counters.clone()) {
        maps.reset_counter(*slot)?;
        installed.counters.insert(*slot);
        changes.other += 1;
    }
    Ok(())
}

/// 2. Targets, then the prefixes and addresses that point to them.
fn pointing(
    maps: &mut Maps,
    installed: &mut Installed,
    desired: &Desired,
    changes: &mut Changes,
    full: &mut Overflow,
) -> Result<(), ReconcileError> {
    for (key, target) in &desired.targets {
        if installed.targets.get(key) != Some(target) {
            match maps.put_target(key, target) {
                Ok(()) => {
                    installed.targets.insert(*key, *target);
                    changes.targets += 1;
                }
                Err(err) => full.note(err)?,
            }
        }
    }
    for (net, set) in &desired.cidrs {
        if installed.cidrs.get(net) != Some(set) {
            match maps.put_cidr(net, *set) {
                Ok(()) => {
                    installed.cidrs.insert(*net, *set);
                    changes.addresses += 1;
                }
                Err(err) => full.note(err)?,
            }
        }
    }
    for (addr, entry) in &desired.addresses {
        if installed.addresses.get(addr) != Some(entry) {
            match maps.put_address(*addr, entry) {
                Ok(()) => {
                    installed.addresses.insert(*addr, *entry);
                    changes.addresses += 1;
                }
                Err(err) => full.note(err)?,
            }
        }
    }
    Ok(())
}

/// 3. Cgroups: stale first (so a full map recovers), then new and changed, then the settings
///    with the generation that makes cached decisions be computed again.
fn cgroups(
    maps: &mut Maps,
    installed: &mut Installed,
    desired: &Desired,
    name_seed: u64,
    changes: &mut Changes,
    full: &mut Overflow,
) -> Result<(), ReconcileError> {
    let stale: Vec<u64> = installed
        .cgroups
        .keys()
        .filter(|id| !desired.cgroups.contains_key(id))
        .copied()
        .collect();
    for id in stale {
        maps.delete_cgroup(id)?;
        installed.cgroups.remove(&id);
        changes.cgroups += 1;
    }
    for (id, entry) in &desired.cgroups {
        if installed.cgroups.get(id) != Some(entry) {
            match maps.put_cgroup(*id, *entry) {
                Ok(()) => {
                    installed.cgroups.insert(*id, *entry);
                    changes.cgroups += 1;
                }
                Err(err) => full.note(err)?,
            }
        }
    }
    let config = config_value(
        &installed.config,
        &desired.settings,
        name_seed,
        changes.cgroups > 0,
        installed.markers_complete,
    );
    if config != installed.config {
        maps.put_config(&config)?;
        installed.config = config;
        changes.other += 1;
    }
    Ok(())
}

/// 4. Removals of what nothing refers to any more.
fn removals(
    maps: &mut Maps,
    installed: &mut Installed,
    desired: &Desired,
    changes: &mut Changes,
) -> Result<(), DatapathError> {
    changes.addresses += remove(&mut installed.addresses, &desired.addresses, |addr| {
        maps.delete_address(*addr)
    })?;
    changes.addresses += remove(&mut installed.cidrs, &desired.cidrs, |net| {
        maps.delete_cidr(net)
    })?;
    changes.targets += remove(&mut installed.targets, &desired.targets, |key| {
        maps.delete_target(key)
    })?;
    for slot in installed.counters.clone().difference(&desired.counters) {
        maps.delete_counter(*slot)?;
        installed.counters.remove(slot);
        changes.other += 1;
    }
    changes.other += remove(&mut installed.patterns, &desired.patterns, |hash| {
        maps.delete_pattern(*hash)
    })?;
    for resolver in installed.trusted.clone().difference(&desired.trusted) {
        maps.delete_trusted(*resolver)?;
        installed.trusted.remove(resolver);
        changes.other += 1;
    }
    changes.other += remove(&mut installed.labels, &desired.labels, |&(kind, id)| {
        maps.delete_label(kind, id)
    })?;
    Ok(())
}

/// Removes each entry of `installed` that `wanted` lacks.
fn remove<K: Ord + Clone, V>(
    installed: &mut BTreeMap<K, V>,
    wanted: &BTreeMap<K, V>,
    mut delete: impl FnMut(&K) -> Result<(), DatapathError>,
) -> Result<usize, DatapathError> {
    let gone: Vec<K> = installed
        .keys()
        .filter(|key| !wanted.contains_key(key))
        .cloned()
        .collect();
    for key in &gone {
        delete(key)?;
        installed.remove(key);
    }
    Ok(gone.len())
}

/// Writes each entry of `wanted` that `installed` lacks or holds differently.
fn upsert<K: Ord + Clone, V: PartialEq + Clone>(
    installed: &mut BTreeMap<K, V>,
    wanted: &BTreeMap<K, V>,
    mut put: impl FnMut(&K, &V) -> Result<(), DatapathError>,
) -> Result<usize, DatapathError> {
    let mut changed = 0;
    for (key, value) in wanted {
        if installed.get(key) != Some(value) {
            put(key, value)?;
            installed.insert(key.clone(), value.clone());
            changed += 1;
        }
    }
    Ok(changed)
}

/// The `CONFIG` value for `settings`: the seed kept, the generation bumped when cgroups changed.
fn config_value(
    current: &Config,
    settings: &Settings,
    name_seed: u64,
    bump: bool,
    markers_complete: bool,
) -> Config {
    let mut dns_ports_be = [0; egress_common::limits::DNS_PORTS];
    for (slot, port) in dns_ports_be.iter_mut().zip(&settings.dns_ports) {
        *slot = port.to_be();
    }
    let mut flags = 0;
    if settings.learn {
        flags |= egress_common::config_flags::LEARN;
    }
    if settings.has_cidrs {
        flags |= egress_common::config_flags::HAS_CIDRS;
    }
    if !markers_complete {
        flags |= egress_common::config_flags::MARKERS_INCOMPLETE;
    }
    Config {
        generation: current.generation + u64::from(bump),
        name_seed,
        grace_ns: settings.grace_ns,
        min_ttl_ns: settings.min_ttl_ns,
        max_ttl_ns: settings.max_ttl_ns,
        dns_ports_be,
        flags,
        reserved: 0,
    }
}
