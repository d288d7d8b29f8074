//! Test cgroups under the real cgroup2 mount.

use std::{
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::Command,
};

/// The cgroup2 mount point from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// A cgroup the test owns; removed (after its processes are killed) on drop.
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
    owned: bool,
}

impl TestCgroup {
    /// A new top-level test cgroup.
    pub fn new(label: &str) -> Self {
        Self::named(&crate::unique(label))
    }

    /// A top-level cgroup with a fixed name (the demo's and the benchmark's sandboxes).
    pub fn named(name: &str) -> Self {
        let mount = cgroup2_mount().expect("no cgroup2 mount");
        Self::create(mount.join(name))
    }

    fn create(path: PathBuf) -> Self {
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|err| panic!("mkdir {}: {err}", path.display()));
        Self { path, owned: true }
    }

    /// A child cgroup (removed before its parent).
    #[must_use]
    pub fn child(&self, name: &str) -> Self {
        Self::create(self.path.join(name))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup id.
    pub fn id(&self) -> u64 {
        std::fs::metadata(&self.path)
            .unwrap_or_else(|err| panic!("stat {}: {err}", self.path.display()))
            .ino()
    }

    /// Makes `command` start inside this cgroup.
    pub fn enter(&self, command: &mut Command) {
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.procs"))
            .unwrap_or_else(|err| panic!("open {}/cgroup.procs: {err}", self.path.display()));
        let fd = std::os::fd::AsRawFd::as_raw_fd(&procs);
        // SAFETY: only async-signal-safe calls (write) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let _keep_open = &procs;
                if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // Kill whatever is left, then remove; a busy cgroup retries briefly.
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("could not remove test cgroup {}", self.path.display());
    }
}
