//! Loading and attaching the programs, adopting what a previous run pinned, and uninstalling.
//!
//! Restarts never leave a gap: maps are pinned by name and reused, and a pinned link whose
//! program is identical (same tag) to the one this binary carries is kept as it is. A changed
//! program is attached next to the old one first; its link pin then replaces the old pin in
//! one rename, which detaches the old program.

use std::{fs::File, path::Path};

use aya::{
    EbpfLoader,
    maps::MapData,
    programs::{
        CgroupAttachMode, CgroupSockAddr,
        links::{FdLink, PinnedLink},
    },
};
use egress_common::{map_names, programs};
use tracing::{debug, info, warn};

use super::{DatapathError, OBJECT};
use crate::{
    bpffs::{PinDir, create_private_dir},
    cgroupfs,
};

/// One pinned program attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The cgroup it is attached to.
    pub cgroup_id: u64,
    /// The program name.
    pub program: String,
    /// The kernel's id for the attached program.
    pub program_id: u32,
}

/// What [`attach`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttachReport {
    /// Links kept from a previous run.
    pub adopted: usize,
    /// Links created.
    pub attached: usize,
    /// Links removed from other cgroups.
    pub removed: usize,
}

/// Loads the object with pinned maps under `pins` and makes sure every program is attached
/// exactly once, at `cgroup`.
pub fn attach(pins: &PinDir, cgroup: &Path) -> Result<AttachReport, DatapathError> {
    pins.prepare()?;
    let maps_replaced = drop_incompatible_maps(pins);
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pins.maps())
        .load(OBJECT)
        .map_err(|err| DatapathError::Load(Box::new(err)))?;
    let cgroup_file = File::open(cgroup).map_err(|source| DatapathError::AttachCgroup {
        path: cgroup.to_owned(),
        source,
    })?;
    let cgroup_id = cgroupfs::cgroup_id(cgroup).map_err(|err| DatapathError::AttachCgroup {
        path: cgroup.to_owned(),
        source: std::io::Error::other(err),
    })?;
    let link_dir = pins.links_for(cgroup_id);
    create_private_dir(&link_dir)?;
    let pinned_maps = pinned_map_ids(pins);

    let mut report = AttachReport::default();
    for name in programs::ALL {
        let program_error = |source| DatapathError::Program {
            program: name,
            source: Box::new(source),
        };
        let program: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or_else(|| program_error(aya::programs::ProgramError::NotLoaded))?
            .try_into()
            .map_err(program_error)?;
        program.load().map_err(program_error)?;
        let tag = program.info().map_err(program_error)?.tag();
        let pin = link_dir.join(name);
        // Keep a pinned link only when its program is this one (same tag) and uses exactly the
        // maps pinned now (not ones replaced by an earlier, interrupted run).
        let keep = !maps_replaced
            && pinned_program(&pin).is_some_and(|(_, pinned_tag, maps)| {
                pinned_tag == tag && maps.iter().all(|id| pinned_maps.contains(id))
            });
        if keep {
            debug!(program = name, "adopted pinned link");
            report.adopted += 1;
            continue;
        }
        let link_id = program
            .attach(&cgroup_file, CgroupAttachMode::Single)
            .map_err(program_error)?;
        let link: FdLink = program
            .take_link(link_id)
            .map_err(program_error)?
            .try_into()
            .map_err(|err| DatapathError::Link {
                path: link_dir.join(name),
                source: std::io::Error::other(err),
            })?;
        let staged = link_dir.join(format!("{name}_new"));
        remove_if_present(&staged)?;
        link.pin(&staged).map_err(|err| DatapathError::Link {
            path: staged.clone(),
            source: std::io::Error::other(err),
        })?;
        std::fs::rename(&staged, &pin).map_err(|source| DatapathError::Link {
            path: pin.clone(),
            source,
        })?;
        report.attached += 1;
    }
    report.removed = remove_other_attachments(pins, cgroup_id)?;
    info!(
        cgroup = %cgroup.display(),
        adopted = report.adopted,
        attached = report.attached,
        removed = report.removed,
        "programs attached"
    );
    Ok(report)
}

/// The attachments pinned under `pins`.
pub fn attachments(pins: &PinDir) -> Vec<Attachment> {
    let mut found = Vec::new();
    let Ok(dirs) = std::fs::read_dir(pins.links()) else {
        return found;
    };
    for dir in dirs.flatten() {
        let Some(cgroup_id) = dir.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        for name in programs::ALL {
            if let Some((program_id, _, _)) = pinned_program(&dir.path().join(name)) {
                found.push(Attachment {
                    cgroup_id,
                    program: name.to_owned(),
                    program_id,
                });
            }
        }
    }
    found.sort_by(|a, b| (a.cgroup_id, &a.program).cmp(&(b.cgroup_id, &b.program)));
    found
}

/// Detaches every program and removes every pinned object under `pins`. Returns how many
/// links were removed.
pub fn uninstall(pins: &PinDir) -> Result<usize, DatapathError> {
    if !pins.exists() {
        return Ok(0);
    }
    let removed = remove_other_attachments(pins, u64::MAX)?;
    for name in map_names::ALL {
        remove_if_present(&pins.map(name))?;
    }
    for dir in [pins.maps(), pins.links(), pins.root().to_owned()] {
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(DatapathError::Link { path: dir, source }),
        }
    }
    info!(dir = %pins.root().display(), links = removed, "uninstalled");
    Ok(removed)
}

/// The program id, tag and map ids behind a pinned link.
fn pinned_program(pin: &Path) -> Option<(u32, u64, Vec<u32>)> {
    let link: FdLink = PinnedLink::from_pin(pin).ok()?.into();
    let program_id = link.info().ok()?.program_id();
    let info = aya::programs::loaded_programs()
        .flatten()
        .find(|info| info.id() == program_id)?;
    let maps = info.map_ids().ok().flatten().unwrap_or_default();
    Some((program_id, info.tag(), maps))
}

/// The kernel ids of the maps pinned under `pins`.
fn pinned_map_ids(pins: &PinDir) -> std::collections::BTreeSet<u32> {
    map_names::ALL
        .iter()
        .filter_map(|name| {
            MapData::from_pin(pins.map(name))
                .ok()?
                .info()
                .ok()
                .map(|info| info.id())
        })
        .collect()
}

/// Removes the link pins of every attach cgroup but `keep`; each removal detaches.
fn remove_other_attachments(pins: &PinDir, keep: u64) -> Result<usize, DatapathError> {
    let mut removed = 0;
    let Ok(dirs) = std::fs::read_dir(pins.links()) else {
        return Ok(0);
    };
    for dir in dirs.flatten() {
        if dir.file_name().to_str() == Some(keep.to_string().as_str()) {
            continue;
        }
        let path = dir.path();
        if let Ok(links) = std::fs::read_dir(&path) {
            for link in links.flatten() {
                remove_if_present(&link.path())?;
                removed += 1;
            }
        }
        std::fs::remove_dir(&path).map_err(|source| DatapathError::Link { path, source })?;
    }
    Ok(removed)
}

fn remove_if_present(path: &Path) -> Result<(), DatapathError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DatapathError::Link {
            path: path.to_owned(),
            source,
        }),
    }
}

/// (name, key size, value size, capacity, flags) of every map, as the object defines them.
fn expected_maps() -> [(&'static str, u32, u32, u32, u32); 8] {
    use egress_common::{
        limits,
        map_flags::{NO_COMMON_LRU, NO_PREALLOC},
        stat,
    };
    // LPM trie keys carry a 4-byte prefix length before the data.
    let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    [
        (
            map_names::ROUTES_V4,
            4 + size(size_of::<egress_common::RouteKey4>()),
            size(size_of::<egress_common::RouteValue>()),
            limits::MAX_ROUTES_V4,
            NO_PREALLOC,
        ),
        (
            map_names::ROUTES_V6,
            4 + size(size_of::<egress_common::RouteKey6>()),
            size(size_of::<egress_common::RouteValue>()),
            limits::MAX_ROUTES_V6,
            NO_PREALLOC,
        ),
        (
            map_names::CGROUPS,
            8,
            size(size_of::<egress_common::CgroupMode>()),
            limits::MAX_CGROUPS,
            0,
        ),
        (
            map_names::ROUTE_STATS,
            4,
            8,
            limits::MAX_ROUTE_STATS,
            NO_PREALLOC,
        ),
        (map_names::STATS, 4, 8, stat::COUNT, 0),
        (
            map_names::REVNAT,
            size(size_of::<egress_common::RevNatKey>()),
            size(size_of::<egress_common::RevNatValue>()),
            limits::MAX_REVNAT,
            NO_COMMON_LRU,
        ),
        (
            map_names::RULE_NAMES,
            4,
            size(size_of::<egress_common::RuleName>()),
            limits::MAX_RULES,
            0,
        ),
        (
            map_names::ROUTE_HOSTS,
            4,
            size(size_of::<egress_common::HostLabel>()),
            limits::MAX_ROUTE_STATS,
            NO_PREALLOC,
        ),
    ]
}

/// Unpins maps whose definition differs from this binary's (after an upgrade that changed the
/// ABI), so that the loader creates them afresh. Returns whether any was dropped.
fn drop_incompatible_maps(pins: &PinDir) -> bool {
    let mut dropped = false;
    for (name, key_size, value_size, max_entries, flags) in expected_maps() {
        let path = pins.map(name);
        if !path.exists() {
            continue;
        }
        let compatible = MapData::from_pin(&path)
            .and_then(|map| map.info())
            .is_ok_and(|info| {
                // The kernel rounds a per-CPU-list LRU's capacity up to a multiple of the
                // possible CPUs, so for it "at least" is the match.
                let capacity_ok = if flags & egress_common::map_flags::NO_COMMON_LRU == 0 {
                    info.max_entries() == max_entries
                } else {
                    info.max_entries() >= max_entries
                };
                info.key_size() == key_size
                    && info.value_size() == value_size
                    && capacity_ok
                    && info.map_flags() == flags
            });
        if !compatible {
            warn!(
                map = name,
                "pinned map has another definition; recreating it"
            );
            if std::fs::remove_file(&path).is_ok() {
                dropped = true;
            }
        }
    }
    dropped
}
