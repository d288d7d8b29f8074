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
use egress_common::{maps as defs, programs};
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

/// Loads the object with pinned maps under `pins` and makes sure every program is attached
/// exactly once, at `cgroup`. What it did (links adopted, attached, removed) is logged.
pub fn attach(pins: &PinDir, cgroup: &Path) -> Result<(), DatapathError> {
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
    let cgroup_id =
        cgroupfs::cgroup_id(cgroup).map_err(|source| DatapathError::AttachCgroupId {
            path: cgroup.to_owned(),
            source,
        })?;
    let link_dir = pins.links_for(cgroup_id);
    create_private_dir(&link_dir)?;
    let pinned_maps = pinned_map_ids(pins);

    let (mut adopted, mut attached) = (0, 0);
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
            adopted += 1;
            continue;
        }
        let link_id = program
            .attach(&cgroup_file, CgroupAttachMode::Single)
            .map_err(program_error)?;
        let link: FdLink = program
            .take_link(link_id)
            .map_err(program_error)?
            .try_into()
            .map_err(|source| DatapathError::NotALink {
                program: name,
                source,
            })?;
        let staged = link_dir.join(format!("{name}_new"));
        remove_if_present(&staged)?;
        link.pin(&staged).map_err(|source| DatapathError::PinLink {
            path: staged.clone(),
            source,
        })?;
        std::fs::rename(&staged, &pin).map_err(|source| DatapathError::Link {
            path: pin.clone(),
            source,
        })?;
        attached += 1;
    }
    let removed = remove_other_attachments(pins, cgroup_id)?;
    info!(
        cgroup = %cgroup.display(),
        adopted,
        attached,
        removed,
        "programs attached"
    );
    Ok(())
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
    for def in defs::ALL {
        remove_if_present(&pins.map(def.name))?;
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
    defs::ALL
        .iter()
        .filter_map(|def| {
            MapData::from_pin(pins.map(def.name))
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

/// Unpins maps whose definition differs from this binary's (after an upgrade that changed the
/// ABI), so that the loader creates them afresh. Returns whether any was dropped.
fn drop_incompatible_maps(pins: &PinDir) -> bool {
    let mut dropped = false;
    for def in defs::ALL {
        let path = pins.map(def.name);
        if !path.exists() {
            continue;
        }
        let compatible = MapData::from_pin(&path)
            .and_then(|map| map.info())
            .is_ok_and(|info| {
                def.matches(
                    info.key_size(),
                    info.value_size(),
                    info.max_entries(),
                    info.map_flags(),
                )
            });
        if !compatible {
            warn!(
                map = def.name,
                "pinned map has another definition; recreating it"
            );
            if std::fs::remove_file(&path).is_ok() {
                dropped = true;
            }
        }
    }
    dropped
}
