//! Loading and attaching the programs, adopting what a previous run pinned, and uninstalling.
//!
//! Two steps, so that nothing runs half-ready:
//!
//! 1. [`load`] creates (or opens) this layout's pinned maps and loads every program into the
//!    kernel, without attaching any. A program the verifier rejects fails here, with nothing
//!    changed.
//! 2. The engine fills the maps (and migrates older layouts' kernel-written entries); then
//!    [`Loaded::attach`] attaches each program. A pinned link whose program is identical (same
//!    tag, same maps) is kept as it is; a changed program is attached next to the old one and
//!    its pin replaces the old pin in one rename, which detaches the old program. Links of
//!    other attach cgroups and maps of other layout versions go last.

use std::{collections::BTreeSet, fs::File, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::MapData,
    programs::{
        CgroupAttachMode, Program,
        links::{FdLink, PinnedLink},
    },
};
use egress_common::{maps as defs, programs};
use tracing::{debug, info, warn};

use super::{DatapathError, OBJECT, sys};
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

/// The programs, loaded into the kernel with this layout's pinned maps, not attached yet.
pub struct Loaded {
    ebpf: Ebpf,
    /// Whether a pinned map had another definition and was created afresh.
    maps_replaced: bool,
}

/// Creates or opens the pinned maps of this layout under `pins` and loads every program.
pub fn load(pins: &PinDir) -> Result<Loaded, DatapathError> {
    pins.prepare()?;
    let maps_replaced = drop_incompatible_maps(pins);
    let paths: Vec<(&str, std::path::PathBuf)> = defs::ALL
        .iter()
        .map(|def| (def.name, pins.map(def.name)))
        .collect();
    let mut loader = EbpfLoader::new();
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .load(OBJECT)
        .map_err(|err| DatapathError::Load(Box::new(err)))?;
    load_programs(&mut ebpf)?;
    install_tail_calls(&mut ebpf)?;
    Ok(Loaded {
        ebpf,
        maps_replaced,
    })
}

/// Puts the tail-called programs in their program array (its pin keeps them there).
fn install_tail_calls(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let map = ebpf.take_map(defs::ANSWERS.name).ok_or_else(|| {
        DatapathError::map(defs::ANSWERS.name)(aya::maps::MapError::InvalidName {
            name: defs::ANSWERS.name.to_owned(),
        })
    })?;
    let mut answers: aya::maps::ProgramArray<MapData> = map
        .try_into()
        .map_err(DatapathError::map(defs::ANSWERS.name))?;
    let name = programs::DNS_ANSWERS;
    let program = ebpf
        .program(name)
        .ok_or_else(|| program_error(name)(aya::programs::ProgramError::NotLoaded))?;
    let fd = program.fd().map_err(program_error(name))?;
    answers
        .set(0, fd, 0)
        .map_err(DatapathError::map(defs::ANSWERS.name))
}

/// Loads every program of the object into the kernel (maps unpinned) and returns each
/// program's verified instruction count where the kernel reports it (5.16+): whether this
/// kernel accepts the datapath, changing nothing.
pub fn preflight() -> Result<Vec<(&'static str, Option<u32>)>, DatapathError> {
    let mut ebpf = Ebpf::load(OBJECT).map_err(|err| DatapathError::Load(Box::new(err)))?;
    load_programs(&mut ebpf)?;
    programs::ALL
        .iter()
        .chain(&programs::TAIL_CALLED)
        .map(|name| {
            let program = ebpf
                .program(name)
                .ok_or_else(|| program_error(name)(aya::programs::ProgramError::NotLoaded))?;
            let info = program.info().map_err(program_error(name))?;
            Ok((*name, info.verified_instruction_count()))
        })
        .collect()
}

fn program_error(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> DatapathError {
    move |source| DatapathError::Program {
        program: name,
        source: Box::new(source),
    }
}

fn load_programs(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    for name in programs::ALL.into_iter().chain(programs::TAIL_CALLED) {
        let error = program_error(name);
        let program = ebpf
            .program_mut(name)
            .ok_or_else(|| error(aya::programs::ProgramError::NotLoaded))?;
        match program {
            Program::CgroupSockAddr(program) => program.load(),
            Program::CgroupSock(program) => program.load(),
            Program::CgroupSkb(program) => program.load(),
            Program::CgroupSockopt(program) => program.load(),
            _ => Err(aya::programs::ProgramError::UnexpectedProgramType),
        }
        .map_err(&error)?;
    }
    Ok(())
}

/// Attaches `program` at `cgroup` and returns its link.
fn attach_program(
    name: &'static str,
    program: &mut Program,
    cgroup: &File,
) -> Result<FdLink, DatapathError> {
    let error = program_error(name);
    let not_a_link = |source| DatapathError::NotALink {
        program: name,
        source,
    };
    let mode = CgroupAttachMode::Single;
    match program {
        Program::CgroupSockAddr(program) => {
            let id = program.attach(cgroup, mode).map_err(&error)?;
            program
                .take_link(id)
                .map_err(&error)?
                .try_into()
                .map_err(not_a_link)
        }
        Program::CgroupSock(program) => {
            let id = program.attach(cgroup, mode).map_err(&error)?;
            program
                .take_link(id)
                .map_err(&error)?
                .try_into()
                .map_err(not_a_link)
        }
        Program::CgroupSkb(program) => {
            let attach_type = program
                .expected_attach_type()
                .ok_or_else(|| error(aya::programs::ProgramError::UnexpectedProgramType))?;
            let id = program.attach(cgroup, attach_type, mode).map_err(&error)?;
            program
                .take_link(id)
                .map_err(&error)?
                .try_into()
                .map_err(not_a_link)
        }
        _ => Err(error(aya::programs::ProgramError::UnexpectedProgramType)),
    }
}

/// Attaches `program` at `cgroup` and pins its link at `pin`.
fn attach_and_pin(
    name: &'static str,
    program: &mut Program,
    cgroup: &File,
    pin: &Path,
) -> Result<(), DatapathError> {
    if let Program::CgroupSockopt(sockopt) = program {
        let program_fd = sockopt.fd().map_err(program_error(name))?;
        return sys::link_and_pin(
            std::os::fd::AsFd::as_fd(program_fd),
            std::os::fd::AsFd::as_fd(cgroup),
            sys::CGROUP_SETSOCKOPT,
            pin,
        )
        .map_err(|source| DatapathError::Link {
            path: pin.to_owned(),
            source,
        });
    }
    let link = attach_program(name, program, cgroup)?;
    link.pin(pin).map_err(|source| DatapathError::PinLink {
        path: pin.to_owned(),
        source,
    })?;
    Ok(())
}

impl Loaded {
    /// Makes sure every program is attached exactly once, at `cgroup`; then removes the links
    /// of other attach cgroups and the maps of other layout versions. What it did is logged.
    pub fn attach(mut self, pins: &PinDir, cgroup: &Path) -> Result<(), DatapathError> {
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
            let program = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| program_error(name)(aya::programs::ProgramError::NotLoaded))?;
            let tag = program.info().map_err(program_error(name))?.tag();
            let pin = link_dir.join(name);
            // Keep a pinned link only when its program is this one (same tag) and uses exactly
            // the maps pinned now (not ones replaced by an earlier, interrupted run).
            let keep = !self.maps_replaced
                && pinned_program(&pin).is_some_and(|(_, pinned_tag, maps)| {
                    pinned_tag == tag && maps.iter().all(|id| pinned_maps.contains(id))
                });
            if keep {
                debug!(program = name, "adopted pinned link");
                adopted += 1;
                continue;
            }
            // The program first, so that a pinned link always has its program's pin beside it.
            let program_pin = program_pin(&pin);
            remove_if_present(&program_pin)?;
            program
                .pin(&program_pin)
                .map_err(|source| DatapathError::PinProgram {
                    path: program_pin.clone(),
                    source,
                })?;
            let staged = link_dir.join(format!("{name}_new"));
            remove_if_present(&staged)?;
            attach_and_pin(name, program, &cgroup_file, &staged)?;
            // The new program is on the cgroup: take the old one off now (on 5.10 an unpinned
            // link is freed late), then put the new link's pin in its place.
            sys::detach_pinned(&pin);
            std::fs::rename(&staged, &pin).map_err(|source| DatapathError::Link {
                path: pin.clone(),
                source,
            })?;
            attached += 1;
        }
        let removed = remove_other_attachments(pins, cgroup_id)?;
        // What the old programs learned until they were replaced, before their maps go (best
        // effort: the first copy, before the attach, already carried the rest).
        if let Err(err) = super::migrate::carry_learned(pins) {
            warn!(error = %err, "cannot carry the last learned addresses over from the previous map layout");
        }
        let retired = remove_other_versions(pins)?;
        info!(
            cgroup = %cgroup.display(),
            adopted,
            attached,
            removed,
            retired_layouts = ?retired,
            "programs attached"
        );
        Ok(())
    }
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

/// Detaches every program and removes every pinned object under `pins`, of every layout.
/// Returns how many links were removed.
pub fn uninstall(pins: &PinDir) -> Result<usize, DatapathError> {
    if !pins.exists() {
        return Ok(0);
    }
    let removed = remove_other_attachments(pins, u64::MAX)?;
    for def in defs::ALL {
        remove_if_present(&pins.map(def.name))?;
    }
    remove_other_versions(pins)?;
    for dir in [
        pins.maps(),
        pins.maps_root(),
        pins.links(),
        pins.root().to_owned(),
    ] {
        remove_dir_if_present(&dir)?;
    }
    info!(dir = %pins.root().display(), links = removed, "uninstalled");
    Ok(removed)
}

/// The pin of the program behind the link pinned at `link`.
fn program_pin(link: &Path) -> std::path::PathBuf {
    let mut name = link.file_name().unwrap_or_default().to_owned();
    name.push(PROGRAM_PIN_SUFFIX);
    link.with_file_name(name)
}

/// Programs are pinned next to their links, `<name>_prog` (bpffs names cannot hold a `.`).
const PROGRAM_PIN_SUFFIX: &str = "_prog";

/// The program id, tag and map ids behind a pinned link: from the program pinned beside it,
/// when that is the link's program (no `CAP_SYS_ADMIN` needed to read them).
fn pinned_program(pin: &Path) -> Option<(u32, u64, Vec<u32>)> {
    let link: FdLink = PinnedLink::from_pin(pin).ok()?.into();
    let program_id = link.info().ok()?.program_id();
    let program = sys::pinned_program(&program_pin(pin))?;
    (program.id == program_id).then_some((program.id, program.tag, program.map_ids))
}

/// The kernel ids of this layout's maps pinned under `pins`.
fn pinned_map_ids(pins: &PinDir) -> BTreeSet<u32> {
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
                let is_program = link
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.ends_with(PROGRAM_PIN_SUFFIX));
                if !is_program {
                    sys::detach_pinned(&link.path());
                    removed += 1;
                }
                remove_if_present(&link.path())?;
            }
        }
        std::fs::remove_dir(&path).map_err(|source| DatapathError::Link { path, source })?;
    }
    Ok(removed)
}

/// Unpins the maps of every other layout version (the kernel frees them once no program uses
/// them). Returns the versions removed.
fn remove_other_versions(pins: &PinDir) -> Result<Vec<u32>, DatapathError> {
    let versions = pins.other_versions();
    for version in &versions {
        let dir = pins.version(*version);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().is_file() {
                remove_if_present(&entry.path())?;
            }
        }
        if *version > 1 {
            remove_dir_if_present(&dir)?;
        }
    }
    Ok(versions)
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

fn remove_dir_if_present(path: &Path) -> Result<(), DatapathError> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DatapathError::Link {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Unpins this layout's maps whose definition differs from this binary's (a capacity changed
/// without a new layout version, which the ABI test forbids; or a map left behind by a crash
/// mid-creation), so that the loader creates them afresh. Returns whether any was dropped.
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
                let kind = info.map_type().map_or(u32::MAX, |kind| kind as u32);
                def.matches(
                    kind,
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
