//! The BPF filesystem where the agent pins its maps and links.
//!
//! Layout under the agent's directory (default `/sys/fs/bpf/egress-agent`), root-only (0700):
//!
//! ```text
//! maps/v<ABI>/<MAP>              every map of one layout version, pinned by name
//!                                (see egress_common::maps and egress_common::ABI_VERSION)
//! maps/<MAP>                     layout 1 (before versions), read once to migrate
//! links/<cgroup-id>/<program>    one link per program and attach cgroup
//! ```

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    path::{Path, PathBuf},
};

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Errors preparing the BPF filesystem.
#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    /// The directory is not on a BPF filesystem and none could be mounted.
    #[error("{path} is not on a BPF filesystem and mounting bpffs at {mount} failed")]
    Mount {
        /// The agent's directory.
        path: PathBuf,
        /// Where the mount was attempted.
        mount: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The directory could not be created or secured.
    #[error("cannot prepare {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The agent's pin directory.
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
    /// The layout whose maps [`Self::maps`] names: this binary's, or an older one to migrate.
    layout: u32,
}

impl PinDir {
    /// The pin directory at `root`; nothing is touched.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            layout: egress_common::ABI_VERSION,
        }
    }

    /// The same directory, naming the maps of layout `version` (to read them and migrate).
    #[must_use]
    pub fn at_layout(&self, version: u32) -> Self {
        Self {
            root: self.root.clone(),
            layout: version,
        }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where maps of every layout version are pinned.
    pub fn maps_root(&self) -> PathBuf {
        self.root.join("maps")
    }

    /// Where maps of this binary's layout version (or the one [`Self::at_layout`] chose) are
    /// pinned.
    pub fn maps(&self) -> PathBuf {
        self.version(self.layout)
    }

    /// Where maps of layout `version` are pinned (version 1 predates versioned directories).
    pub fn version(&self, version: u32) -> PathBuf {
        if version <= 1 {
            self.maps_root()
        } else {
            self.maps_root().join(format!("v{version}"))
        }
    }

    /// Where a map of this binary's layout is pinned.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    /// The layout versions other than this binary's that have pins.
    pub fn other_versions(&self) -> Vec<u32> {
        let mut versions: Vec<u32> = std::fs::read_dir(self.maps_root())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let name = name.to_str()?;
                match name.strip_prefix('v') {
                    Some(version) if entry.path().is_dir() => version.parse().ok(),
                    // Layout 1 pinned maps directly under maps/.
                    _ if entry.path().is_file() => Some(1),
                    _ => None,
                }
            })
            .filter(|version| *version != egress_common::ABI_VERSION)
            .collect();
        versions.sort_unstable();
        versions.dedup();
        versions
    }

    /// Where links are pinned.
    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Where the links for the attach cgroup `cgroup_id` are pinned.
    pub fn links_for(&self, cgroup_id: u64) -> PathBuf {
        self.links().join(cgroup_id.to_string())
    }

    /// Makes sure the directory is on bpffs (mounting bpffs at its top-level `/sys/fs/bpf`
    /// parent if needed) and that it and its subdirectories exist and are root-only.
    pub fn prepare(&self) -> Result<(), BpffsError> {
        if !on_bpffs(&self.root) {
            let mount = bpffs_mount_point(&self.root);
            mount_bpffs(&mount).map_err(|source| BpffsError::Mount {
                path: self.root.clone(),
                mount,
                source,
            })?;
        }
        for dir in [
            self.root.clone(),
            self.maps_root(),
            self.maps(),
            self.links(),
        ] {
            create_private_dir(&dir)?;
        }
        Ok(())
    }

    /// Whether anything is pinned here.
    pub fn exists(&self) -> bool {
        self.root.exists()
    }
}

/// `egress-agent mount-bpffs`: mounts bpffs at `at` unless a bpffs is there already (no
/// stacking); returns whether it mounted. The DaemonSet's init container runs this, so the
/// agent itself needs no `CAP_SYS_ADMIN`.
pub fn ensure_mounted(at: &Path) -> Result<bool, BpffsError> {
    if on_bpffs(at) && at.exists() {
        return Ok(false);
    }
    mount_bpffs(at).map_err(|source| BpffsError::Mount {
        path: at.to_owned(),
        mount: at.to_owned(),
        source,
    })?;
    Ok(true)
}

/// Creates `dir` (and parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), BpffsError> {
    let io = |source| BpffsError::Io {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

/// Whether `path`, or its nearest existing ancestor, is on a BPF filesystem.
fn on_bpffs(path: &Path) -> bool {
    let Some(existing) = path.ancestors().find(|p| p.exists()) else {
        return false;
    };
    let Ok(c_path) = CString::new(existing.as_os_str().as_bytes()) else {
        return false;
    };
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: valid NUL-terminated path and a properly sized out-buffer.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    // SAFETY: statfs filled the buffer when it returned 0.
    rc == 0 && unsafe { stat.assume_init() }.f_type == BPF_FS_MAGIC
}

/// Where to mount bpffs for `path`: `/sys/fs/bpf` when the path is under it, else the path's
/// parent.
fn bpffs_mount_point(path: &Path) -> PathBuf {
    let standard = Path::new("/sys/fs/bpf");
    if path.starts_with(standard) {
        standard.to_owned()
    } else {
        path.parent().unwrap_or(path).to_owned()
    }
}

fn mount_bpffs(at: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(at)?;
    let target = CString::new(at.as_os_str().as_bytes())?;
    let fstype = c"bpf";
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        tracing::info!(mount = %at.display(), "mounted bpffs");
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
