//! Expiring what the kernel learned from DNS answers: an address goes when its TTL plus grace
//! ran out, when its scope (a selected cgroup entry) is no longer selected, or when its
//! hostname pattern is no longer configured. What stays is summarised for status.
//!
//! Each learned address also has a marker (an entry under `MARKER_SCOPE`) that lets connects
//! to everything else pass without asking who connects. The kernel writes a marker after its
//! entry; the agent removes the markers of addresses no scope holds any more, like this:
//!
//! 1. set `MARKERS_INCOMPLETE` (the hooks then look up the scope's entry whatever the marker
//!    says) and wait for the program runs that started before it;
//! 2. remove the stale markers;
//! 3. read the learned entries again and mark any address that lacks its marker (the kernel
//!    may have learned it again between the first read and step 2);
//! 4. clear `MARKERS_INCOMPLETE`.
//!
//! At start the flag stays set until step 3 has run once, for entries an older agent learned
//! without markers.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use egress_common::{config_flags, label_kind};
use tracing::{debug, warn};

use super::reconcile::Installed;
use crate::{
    cgroupfs::Hierarchy,
    datapath::{self, DatapathError, Maps},
    route::Entry,
};

/// The learned addresses of one hostname pattern in one selected cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LearnedGroup {
    /// The hostname pattern (`api.example.com`, `*.example.com`).
    pub host: String,
    /// The selected cgroup that learned them (its path, else its id).
    pub cgroup: String,
    /// How many addresses.
    pub addresses: usize,
    /// When the last of them expires (monotonic ns).
    pub last_expiry_ns: u64,
}

/// Removes the learned addresses that should go; returns how many went and a summary of
/// those that stay.
pub(crate) fn expire(
    maps: &mut Maps,
    installed: &mut Installed,
    hierarchy: &Hierarchy,
    now_ns: u64,
) -> Result<(usize, Vec<LearnedGroup>), DatapathError> {
    let patterns: BTreeSet<u32> = installed.patterns.values().copied().collect();
    let mut removed = 0;
    let mut groups: BTreeMap<(u32, u64), (usize, u64)> = BTreeMap::new();
    let mut live = BTreeSet::new();
    let (learned, marked) = maps.learned_and_markers()?;
    for ((scope, addr), entry) in learned {
        let selected = matches!(installed.cgroups.get(&scope), Some(Entry::Selected(_)));
        let gone = if !selected || !patterns.contains(&entry.set) {
            maps.delete_learned(scope, addr)?;
            true
        } else {
            entry.expires_ns < now_ns && maps.delete_learned_if_expired(scope, addr, now_ns)?
        };
        if gone {
            removed += 1;
        } else {
            live.insert(addr);
            let group = groups.entry((entry.set, scope)).or_default();
            group.0 += 1;
            group.1 = group.1.max(entry.expires_ns);
        }
    }
    sweep_markers(maps, installed, &live, &marked)?;
    if groups.is_empty() {
        return Ok((removed, Vec::new()));
    }
    let hosts = maps.labels(label_kind::SET)?;
    let paths = hierarchy.paths_by_id();
    let summary = groups
        .into_iter()
        .map(|((set, scope), (addresses, last_expiry_ns))| LearnedGroup {
            host: hosts.get(&set).cloned().unwrap_or_else(|| set.to_string()),
            cgroup: paths
                .get(&scope)
                .cloned()
                .unwrap_or_else(|| scope.to_string()),
            addresses,
            last_expiry_ns,
        })
        .collect();
    Ok((removed, summary))
}

/// Removes the markers of addresses not in `live` (no scope holds them) and marks those in it
/// that lack one (see the module's steps).
fn sweep_markers(
    maps: &mut Maps,
    installed: &mut Installed,
    live: &BTreeSet<IpAddr>,
    marked: &BTreeSet<IpAddr>,
) -> Result<(), DatapathError> {
    let stale: Vec<IpAddr> = marked.difference(live).copied().collect();
    if stale.is_empty() {
        return mark(maps, installed, live, marked);
    }
    set_complete(maps, installed, false)?;
    if let Err(err) = datapath::wait_for_programs() {
        // Without the wait a hook may still trust a marker about to go; keep them all.
        warn!(error = %err, stale = stale.len(), "cannot wait for running programs; stale markers stay");
        return mark(maps, installed, live, marked);
    }
    for addr in &stale {
        maps.delete_marker(*addr)?;
    }
    debug!(removed = stale.len(), "stale markers removed");
    check_markers(maps, installed)
}

/// Marks every learned address that lacks a marker and clears `MARKERS_INCOMPLETE`: step 3
/// and 4 of a sweep, and the check at start (after the programs are attached).
pub(crate) fn check_markers(
    maps: &mut Maps,
    installed: &mut Installed,
) -> Result<(), DatapathError> {
    let (learned, marked) = maps.learned_and_markers()?;
    let live: BTreeSet<IpAddr> = learned.into_keys().map(|(_, addr)| addr).collect();
    mark(maps, installed, &live, &marked)
}

/// Marks the addresses of `live` not in `marked`; then the markers are complete.
fn mark(
    maps: &mut Maps,
    installed: &mut Installed,
    live: &BTreeSet<IpAddr>,
    marked: &BTreeSet<IpAddr>,
) -> Result<(), DatapathError> {
    for addr in live.difference(marked) {
        maps.put_marker(*addr)?;
    }
    set_complete(maps, installed, true)
}

/// Writes `MARKERS_INCOMPLETE` as `complete` says, when it changes.
fn set_complete(
    maps: &mut Maps,
    installed: &mut Installed,
    complete: bool,
) -> Result<(), DatapathError> {
    installed.markers_complete = complete;
    let mut config = installed.config;
    if complete {
        config.flags &= !config_flags::MARKERS_INCOMPLETE;
    } else {
        config.flags |= config_flags::MARKERS_INCOMPLETE;
    }
    if config != installed.config {
        maps.put_config(&config)?;
        installed.config = config;
    }
    Ok(())
}
