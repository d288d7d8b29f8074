//! Expiring what the kernel learned from DNS answers: an address goes when its TTL plus grace
//! ran out, when its scope (a selected cgroup entry) is no longer selected, or when its
//! hostname pattern is no longer configured. What stays is summarised for status.

use std::collections::{BTreeMap, BTreeSet};

use egress_common::label_kind;

use super::reconcile::Installed;
use crate::{
    cgroupfs::Hierarchy,
    datapath::{DatapathError, Maps},
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
    installed: &Installed,
    hierarchy: &Hierarchy,
    now_ns: u64,
) -> Result<(usize, Vec<LearnedGroup>), DatapathError> {
    let patterns: BTreeSet<u32> = installed.patterns.values().copied().collect();
    let mut removed = 0;
    let mut groups: BTreeMap<(u32, u64), (usize, u64)> = BTreeMap::new();
    for ((scope, addr), entry) in maps.learned()? {
        let selected = matches!(installed.cgroups.get(&scope), Some(Entry::Selected(_)));
        if entry.expires_ns < now_ns || !selected || !patterns.contains(&entry.set) {
            maps.delete_learned(scope, addr)?;
            removed += 1;
        } else {
            let group = groups.entry((entry.set, scope)).or_default();
            group.0 += 1;
            group.1 = group.1.max(entry.expires_ns);
        }
    }
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
