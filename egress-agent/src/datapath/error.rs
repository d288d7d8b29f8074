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
    /// The routes map has no room left.
    #[error(
        "map {map} is full ({capacity} entries): {dropped} routes were not installed; remove rules or addresses"
    )]
    RoutesFull {
        /// The map name.
        map: &'static str,
        /// Its capacity.
        capacity: u32,
        /// How many desired routes did not fit.
        dropped: usize,
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
