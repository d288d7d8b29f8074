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

    /// A cgroup at `path` (created with its parents), removed on drop.
    pub fn at(path: PathBuf) -> Self {
        Self::create(path)
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
        // Kill whatever is left, then remove; a busy cgroup retries briefly (scaled: the
        // killed tasks take longer to go where time is scaled).
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        let deadline = std::time::Instant::now() + crate::scaled(std::time::Duration::from_secs(1));
        loop {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            if std::time::Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("could not remove test cgroup {}", self.path.display());
    }
}

/// The attach types of the agent's programs (`enum bpf_attach_type`).
pub const AGENT_ATTACH_TYPES: [u32; 12] = [
    0,  // BPF_CGROUP_INET_INGRESS
    1,  // BPF_CGROUP_INET_EGRESS
    2,  // BPF_CGROUP_INET_SOCK_CREATE
    22, // BPF_CGROUP_SETSOCKOPT
    10, // BPF_CGROUP_INET4_CONNECT
    11, // BPF_CGROUP_INET6_CONNECT
    14, // BPF_CGROUP_UDP4_SENDMSG
    15, // BPF_CGROUP_UDP6_SENDMSG
    19, // BPF_CGROUP_UDP4_RECVMSG
    20, // BPF_CGROUP_UDP6_RECVMSG
    29, // BPF_CGROUP_INET4_GETPEERNAME
    30, // BPF_CGROUP_INET6_GETPEERNAME
];

/// The programs attached directly to the cgroup at `path`, as (attach type, program id), by
/// `BPF_PROG_QUERY` with the attribute layout every supported kernel (5.10+) accepts.
pub fn attached_programs(path: &Path) -> Vec<(u32, u32)> {
    #[repr(C)]
    #[expect(
        clippy::struct_field_names,
        reason = "the kernel's field names (`union bpf_attr`, query)"
    )]
    struct Query {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        reserved: u32,
    }
    const BPF_PROG_QUERY: libc::c_long = 16;
    let dir =
        std::fs::File::open(path).unwrap_or_else(|err| panic!("open {}: {err}", path.display()));
    let fd = u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&dir)).expect("fd");
    let mut found = Vec::new();
    for attach_type in AGENT_ATTACH_TYPES {
        let mut ids = [0_u32; 64];
        let mut query = Query {
            target_fd: fd,
            attach_type,
            query_flags: 0,
            attach_flags: 0,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: 64,
            reserved: 0,
        };
        // SAFETY: a valid attribute of the size passed; the kernel writes at most `prog_cnt` ids.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_QUERY,
                &raw mut query,
                size_of::<Query>(),
            )
        };
        assert_eq!(
            rc,
            0,
            "BPF_PROG_QUERY {} type {attach_type}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        let count = query.prog_cnt.min(64) as usize;
        found.extend(ids[..count].iter().map(|id| (attach_type, *id)));
    }
    found.sort_unstable();
    found
}
