//! Writes desired state into the maps by diff: additions and changes first, removals last, so
//! no route that stays desired is ever missing, even for a moment.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tracing::{debug, warn};

use super::desired::Desired;
use crate::{
    datapath::{DatapathError, Maps, RouteEntry, stored_rule_name},
    route::{Mode, RouteMatch},
};

/// What a reconcile changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Routes added.
    pub added: usize,
    /// Routes whose target changed.
    pub updated: usize,
    /// Routes removed.
    pub removed: usize,
    /// Cgroup entries added, changed or removed.
    pub cgroups: usize,
}

impl Changes {
    /// Whether anything changed.
    pub(crate) fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// Brings the maps to `desired`. On a full routes map the routes that fit are installed, the
/// removals still happen, and [`DatapathError::RoutesFull`] says how many did not fit.
pub(crate) fn reconcile(maps: &mut Maps, desired: &Desired) -> Result<Changes, DatapathError> {
    let mut changes = Changes::default();
    let rule_ids = sync_rule_names(maps, &desired.rules)?;
    // Cgroups first gain what they will have, keeping what they had: while routes change groups
    // (policies renumbered), a pod matches both its old and its new routes, never neither.
    let widened = widen_cgroups(maps, desired)?;

    let current: HashMap<RouteMatch, RouteEntry> = maps
        .routes()?
        .into_iter()
        .map(|entry| (entry.route, entry))
        .collect();
    let mut used_ids: BTreeSet<u32> = current.values().map(|value| value.route_id).collect();
    let mut next_id = 0_u32;
    let mut full: Option<DatapathError> = None;
    let mut dropped = 0;
    let mut labels: BTreeMap<u32, String> = BTreeMap::new();

    for (route, wanted) in &desired.routes {
        let rule_id = rule_ids[&desired.rules[wanted.rule].to_string()];
        let existing = current.get(route);
        let route_id = if let Some(value) = existing {
            value.route_id
        } else {
            while used_ids.contains(&next_id) {
                next_id += 1;
            }
            used_ids.insert(next_id);
            maps.reset_route_counter(next_id)?;
            next_id
        };
        let entry = RouteEntry {
            route: *route,
            target: wanted.target,
            rule_id,
            route_id,
            groups: wanted.groups,
        };
        let installed = if existing == Some(&entry) {
            true
        } else {
            match maps.put_route(&entry) {
                Ok(()) => {
                    if existing.is_some() {
                        changes.updated += 1;
                    } else {
                        changes.added += 1;
                    }
                    true
                }
                Err(err @ DatapathError::RoutesFull { .. }) => {
                    dropped += 1;
                    full.get_or_insert(err);
                    // Only a new route's counter goes: an existing route stays installed (older
                    // kernels refuse even updates of existing keys in a full trie).
                    if existing.is_none() {
                        maps.delete_route_counter(route_id)?;
                    }
                    existing.is_some()
                }
                Err(err) => return Err(err),
            }
        };
        if let Some(label) = host_label(&wanted.hosts).filter(|_| installed) {
            labels.insert(route_id, label);
        }
    }

    for (route, entry) in &current {
        if !desired.routes.contains_key(route) {
            maps.delete_route(route)?;
            maps.delete_route_counter(entry.route_id)?;
            changes.removed += 1;
        }
    }

    sync_host_labels(maps, &labels)?;
    changes.cgroups = widened + sync_cgroups(maps, desired)?;
    for conflict in &desired.conflicts {
        debug!(?conflict, "route conflict");
    }
    match full {
        Some(DatapathError::RoutesFull { map, capacity, .. }) => {
            warn!(map, capacity, dropped, "routes map is full");
            Err(DatapathError::RoutesFull {
                map,
                capacity,
                dropped,
            })
        }
        _ => Ok(changes),
    }
}

/// Gives every desired rule a stable id (kept from the pinned names), writes new names and
/// removes unused ones. Returns name → id.
fn sync_rule_names(
    maps: &mut Maps,
    rules: &[crate::intent::RuleOwner],
) -> Result<HashMap<String, u32>, DatapathError> {
    let rules: Vec<String> = rules.iter().map(ToString::to_string).collect();
    // The pinned map holds names cut to its field, so match on the stored form.
    let stored = stored_rule_name;
    let pinned = maps.rule_names()?;
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut used: BTreeSet<u32> = BTreeSet::new();
    for name in &rules {
        if let Some((id, _)) = pinned
            .iter()
            .find(|(id, known)| **known == stored(name) && !used.contains(*id))
        {
            ids.insert(name.clone(), *id);
            used.insert(*id);
        }
    }
    let mut next = 1_u32;
    for name in &rules {
        if ids.contains_key(name) {
            continue;
        }
        // A stale pinned id may be reused: it is overwritten here and no longer counted stale.
        while used.contains(&next) {
            next += 1;
        }
        used.insert(next);
        maps.put_rule_name(next, name)?;
        ids.insert(name.clone(), next);
    }
    // Names of removed rules go once no route refers to them; routes are removed later in the
    // same reconcile, and a name shown a moment too long is harmless.
    let stale: BTreeMap<u32, String> = pinned
        .into_iter()
        .filter(|(id, _)| !used.contains(id))
        .collect();
    for id in stale.keys() {
        maps.delete_rule_name(*id)?;
    }
    Ok(ids)
}

/// `first-host +N`: the hostname that brought a route in, and how many more did.
fn host_label(hosts: &BTreeSet<String>) -> Option<String> {
    let first = hosts.iter().next()?;
    Some(match hosts.len() {
        1 => first.clone(),
        n => format!("{first} +{}", n - 1),
    })
}

fn sync_host_labels(maps: &mut Maps, wanted: &BTreeMap<u32, String>) -> Result<(), DatapathError> {
    let current = maps.host_labels()?;
    for (id, label) in wanted {
        if current.get(id) != Some(label) {
            maps.put_host_label(*id, label)?;
        }
    }
    for id in current.keys() {
        if !wanted.contains_key(id) {
            maps.delete_host_label(*id)?;
        }
    }
    Ok(())
}

fn widen_cgroups(maps: &mut Maps, desired: &Desired) -> Result<usize, DatapathError> {
    let current = maps.cgroups()?;
    let mut changed = 0;
    for (id, mode) in &desired.cgroups {
        let have = current.get(id).copied().flatten();
        let widened = match (have, *mode) {
            (Some(Mode::Selected(had)), Mode::Selected(wanted)) => Mode::Selected(had | wanted),
            _ => *mode,
        };
        if have != Some(widened) {
            maps.put_cgroup(*id, widened)?;
            changed += 1;
        }
    }
    Ok(changed)
}

fn sync_cgroups(maps: &mut Maps, desired: &Desired) -> Result<usize, DatapathError> {
    let current = maps.cgroups()?;
    let mut changed = 0;
    for (id, mode) in &desired.cgroups {
        if current.get(id).copied().flatten() != Some(*mode) {
            maps.put_cgroup(*id, *mode)?;
            changed += 1;
        }
    }
    for id in current.keys() {
        if !desired.cgroups.contains_key(id) {
            maps.delete_cgroup(*id)?;
            changed += 1;
        }
    }
    Ok(changed)
}
