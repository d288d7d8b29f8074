//! What a restart starts from: the ids the maps already use, and the resolver's answers,
//! persisted in `RESOLVED` so that an agent restarted while DNS is down keeps routing every
//! address it knew (their TTLs and grace carry on as before).

use std::{collections::BTreeMap, net::IpAddr};

use egress_common::label_kind;

use super::{
    desired::{Desired, IdSpace},
    reconcile::Installed,
};
use crate::{
    clock,
    datapath::{DatapathError, Maps},
    dns::DnsEngine,
    route::Entry,
};

/// The resolver's answers as persisted: (pattern id, address) → TTL end (monotonic ns).
pub(crate) type Persisted = BTreeMap<(u32, IpAddr), u64>;

/// Expiries closer than this are the same (instants and monotonic ns convert with jitter).
const SAME_EXPIRY_NS: u64 = 1_000_000_000;

/// Prefers, for every key, the id the maps already use for it.
pub(crate) fn prefer_ids(installed: &Installed, ids: &mut IdSpace) {
    let label = |kind: u32, id: u32| installed.labels.get(&(kind, id));
    for ((kind, id), text) in &installed.labels {
        match *kind {
            label_kind::RULE => ids.rules.prefer(text.clone(), *id),
            label_kind::PATTERN => ids.patterns.prefer(text.clone(), *id),
            _ => {}
        }
    }
    for (cgroup, entry) in &installed.cgroups {
        if let Entry::Selected(class) = entry {
            ids.installed_classes.insert(*cgroup, *class);
        }
    }
    for (key, target) in &installed.targets {
        if let Some(rule) = label(label_kind::RULE, target.rule) {
            ids.slots.prefer((rule.clone(), key.set), target.counter);
        }
    }
}

/// Seeds the resolver with what the previous run persisted; returns it as persisted.
pub(crate) fn restore(
    maps: &Maps,
    installed: &Installed,
    dns: &DnsEngine,
) -> Result<Persisted, DatapathError> {
    let persisted = maps.resolved()?;
    for ((pattern, addr), expires_ns) in &persisted {
        if let Some(host) = installed.labels.get(&(label_kind::PATTERN, *pattern)) {
            dns.seed(host, *addr, clock::ns_instant(*expires_ns));
        }
    }
    Ok(persisted)
}

/// Persists the resolver's answers by diff.
pub(crate) fn save(
    maps: &mut Maps,
    persisted: &mut Persisted,
    desired: &Desired,
    dns: &DnsEngine,
) -> Result<(), DatapathError> {
    let mut now: Persisted = BTreeMap::new();
    for (host, addresses) in dns.answers() {
        let Some(pattern) = desired.pattern_ids.get(&host) else {
            continue;
        };
        for (addr, expires) in addresses {
            now.insert((*pattern, addr), clock::instant_ns(expires));
        }
    }
    for (key, expires_ns) in &now {
        let same = persisted
            .get(key)
            .is_some_and(|old| old.abs_diff(*expires_ns) < SAME_EXPIRY_NS);
        if !same {
            maps.put_resolved(key.0, key.1, *expires_ns)?;
            persisted.insert(*key, *expires_ns);
        }
    }
    let gone: Vec<(u32, IpAddr)> = persisted
        .keys()
        .filter(|key| !now.contains_key(key))
        .copied()
        .collect();
    for key in gone {
        maps.delete_resolved(key.0, key.1)?;
        persisted.remove(&key);
    }
    Ok(())
}
