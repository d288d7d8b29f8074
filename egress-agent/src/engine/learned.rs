//! Expiring what the kernel learned from DNS answers: an address goes when its TTL plus grace
//! ran out, when its scope (a selected cgroup entry) is no longer selected, or when its
//! hostname pattern is no longer configured.

use std::collections::BTreeSet;

use super::reconcile::Installed;
use crate::{
    datapath::{DatapathError, Maps},
    route::Entry,
};

/// Removes the learned addresses that should go; returns how many went.
pub(crate) fn expire(
    maps: &mut Maps,
    installed: &Installed,
    now_ns: u64,
) -> Result<usize, DatapathError> {
    let patterns: BTreeSet<u32> = installed.patterns.values().copied().collect();
    let mut removed = 0;
    for ((scope, addr), entry) in maps.learned()? {
        let selected = matches!(installed.cgroups.get(&scope), Some(Entry::Selected(_)));
        if entry.expires_ns < now_ns || !selected || !patterns.contains(&entry.set) {
            maps.delete_learned(scope, addr)?;
            removed += 1;
        }
    }
    Ok(removed)
}
