//! The host's cgroup2 hierarchy: where it is mounted, and cgroup ids (the inode numbers of the
//! cgroup directories, which is what `bpf_get_current_ancestor_cgroup_id` returns).

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Errors finding cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// /proc/self/mountinfo could not be read.
    #[error("cannot read /proc/self/mountinfo")]
    MountInfo(#[source] std::io::Error),
    /// No cgroup2 filesystem is mounted.
    #[error(
        "no cgroup2 filesystem is mounted (see /proc/self/mountinfo); egress-agent needs cgroup v2"
    )]
    NoCgroup2,
    /// A configured cgroup does not exist (yet).
    #[error("cgroup {path} does not exist")]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// A path is not inside the cgroup2 mount.
    #[error("{path} is not inside the cgroup2 mount {mount}")]
    Outside {
        /// The path.
        path: PathBuf,
        /// The cgroup2 mount point.
        mount: PathBuf,
    },
    /// Any other I/O error on a cgroup path.
    #[error("cannot stat cgroup {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Returns the mount point of the first cgroup2 filesystem in /proc/self/mountinfo
/// (`/sys/fs/cgroup` on most nodes, `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountInfo)?;
    parse_cgroup2_mount(&text).ok_or(CgroupError::NoCgroup2)
}

/// The cgroup2 mount point in a mountinfo text.
pub fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // id parent major:minor root mount-point options [optional...] - fstype source super
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(index) = rest.find('\\') {
        out.push_str(&rest[..index]);
        let code = rest
            .get(index + 1..index + 4)
            .and_then(|oct| u8::from_str_radix(oct, 8).ok());
        if let Some(code) = code {
            out.push(char::from(code));
            rest = &rest[index + 4..];
        } else {
            out.push('\\');
            rest = &rest[index + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// The cgroup2 hierarchy mounted at `mount`.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    mount: PathBuf,
}

impl Hierarchy {
    /// The hierarchy mounted at `mount`.
    pub fn new(mount: PathBuf) -> Self {
        Self { mount }
    }

    /// The hierarchy from /proc/self/mountinfo.
    pub fn discover() -> Result<Self, CgroupError> {
        cgroup2_mount().map(Self::new)
    }

    /// The mount point.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// A configured path as an absolute path: absolute paths must lie inside the mount,
    /// relative ones are taken from the mount.
    ///
    /// Paths written for a node's usual `/sys/fs/cgroup` mount are mapped onto a hybrid host's
    /// `/sys/fs/cgroup/unified` mount.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, CgroupError> {
        if path.is_relative() {
            return Ok(self.mount.join(path));
        }
        if path.starts_with(&self.mount) {
            return Ok(path.to_owned());
        }
        if let Ok(rest) = path.strip_prefix("/sys/fs/cgroup") {
            return Ok(self.mount.join(rest));
        }
        Err(CgroupError::Outside {
            path: path.to_owned(),
            mount: self.mount.clone(),
        })
    }

    /// The level of a configured path below the mount (the mount itself is level 0).
    pub fn depth(&self, path: &Path) -> Result<usize, CgroupError> {
        let path = self.resolve(path)?;
        Ok(path
            .strip_prefix(&self.mount)
            .map_or(0, |rest| rest.components().count()))
    }

    /// The cgroup id of a configured path.
    pub fn id_of(&self, path: &Path) -> Result<u64, CgroupError> {
        let path = self.resolve(path)?;
        cgroup_id(&path)
    }

    /// Every cgroup id in the hierarchy with its path relative to the mount (`/` for the root).
    /// Cgroups that vanish during the walk are skipped.
    pub fn paths_by_id(&self) -> HashMap<u64, String> {
        let mut found = HashMap::new();
        let mut stack = vec![self.mount.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let relative = dir.strip_prefix(&self.mount).unwrap_or(&dir);
            found.insert(meta.ino(), format!("/{}", relative.display()));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
        found
    }
}

/// The cgroup id of the cgroup directory at `path` (its inode number on cgroup2).
pub fn cgroup_id(path: &Path) -> Result<u64, CgroupError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(meta.ino()),
        Ok(_) => Err(CgroupError::Missing {
            path: path.to_owned(),
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(CgroupError::Missing {
            path: path.to_owned(),
        }),
        Err(source) => Err(CgroupError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
#[path = "cgroupfs_tests.rs"]
mod tests;
