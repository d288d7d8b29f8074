//! Datapath errors.

use std::path::PathBuf;

/// Errors loading, attaching or reading the datapath.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The BPF filesystem could not be prepared.
    #[error(transparent)]
    Bpffs(#[from] crate::bpffs::BpffsError),
    /// The object could not be loaded (maps created or opened).
    #[error("cannot load the eBPF object")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program failed to load or attach; includes the verifier log when there is one.
    #[error("program {program}")]
    Program {
        /// The program.
        program: &'static str,
        /// Why.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A link could not be pinned, adopted or removed.
    #[error("link {path}")]
    Link {
        /// The pin path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A program could not be pinned beside its link.
    #[error("cannot pin program {path}")]
    PinProgram {
        /// The pin path.
        path: PathBuf,
        /// Why.
        #[source]
        source: aya::pin::PinError,
    },
    /// A new link could not be pinned.
    #[error("cannot pin link {path}")]
    PinLink {
        /// The pin path.
        path: PathBuf,
        /// Why.
        #[source]
        source: aya::pin::PinError,
    },
    /// A program's new attachment is not a pinnable link (kernel without `bpf_link` support).
    #[error("program {program}: attachment is not a bpf_link")]
    NotALink {
        /// The program.
        program: &'static str,
        /// Why.
        #[source]
        source: aya::programs::links::LinkError,
    },
    /// The attach cgroup's id could not be read.
    #[error("cannot read the cgroup id of {path}")]
    AttachCgroupId {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::cgroupfs::CgroupError,
    },
    /// The number of possible CPUs (the length of per-CPU values) could not be read.
    #[error("cannot read the possible CPUs")]
    PossibleCpus {
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The attach cgroup could not be opened.
    #[error("cannot open attach cgroup {path}")]
    AttachCgroup {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The pinned maps are missing: the agent never ran with this directory.
    #[error("no pinned maps at {path}: is the agent installed with this --bpffs-dir?")]
    NotInstalled {
        /// The map directory.
        path: PathBuf,
    },
    /// A map operation failed.
    #[error("map {map}")]
    Map {
        /// The map name.
        map: &'static str,
        /// Why.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A map has no room left.
    #[error("map {map} is full ({capacity} entries)")]
    Full {
        /// The map name.
        map: &'static str,
        /// Its capacity.
        capacity: u32,
    },
    /// The maps of an older layout could not be read for migration.
    #[error("cannot read layout {version}'s map {map} to migrate it")]
    Migrate {
        /// The older layout version.
        version: u32,
        /// The map.
        map: &'static str,
        /// Why.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// The kernel is older than the oldest one the datapath supports.
    #[error(
        "kernel {found} is too old: egress-agent needs Linux {minimum} or newer (cgroup socket storage, cgroup_skb helpers)"
    )]
    KernelTooOld {
        /// The running kernel's release.
        found: String,
        /// The minimum.
        minimum: String,
    },
}

impl DatapathError {
    pub(crate) fn map(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |source| Self::Map {
            map,
            source: Box::new(source),
        }
    }
}
