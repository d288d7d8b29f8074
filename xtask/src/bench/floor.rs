//! The floor under the program-cost table: a bare `connect4` program (`r0 = 1; exit`) attached
//! next to the agent's, so every hooked connection runs both and `bpf_stats` times both. What
//! the bare program costs per call is the hook's dispatch plus `bpf_stats`' own two clock reads;
//! the agent's program's cost above it is the agent's work.
//!
//! aya loads programs from objects only, so this one is loaded with `bpf()` directly: two
//! instructions, no maps.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use anyhow::Context as _;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `r0 = 1` (allow), `exit`.
const ALLOW: [u64; 2] = [
    u64::from_le_bytes([0xb7, 0, 0, 0, 1, 0, 0, 0]),
    u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
];

/// The `BPF_PROG_LOAD` part of `union bpf_attr` up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH`/`BPF_PROG_DETACH` part of `union bpf_attr`.
#[repr(C)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// The `BPF_OBJ_GET_INFO_BY_FD` part of `union bpf_attr`.
#[repr(C)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The bare program, attached to a cgroup until dropped.
pub(crate) struct BareConnect4 {
    program: OwnedFd,
    cgroup: OwnedFd,
    /// Its id, for `bpf_stats`.
    pub(crate) id: u64,
}

impl BareConnect4 {
    /// Loads the program and attaches it to `cgroup` next to what is there.
    pub(crate) fn attach(cgroup: &Path) -> anyhow::Result<Self> {
        let license = c"GPL";
        let mut name = [0_u8; 16];
        name[..10].copy_from_slice(b"bare_floor");
        let mut load = ProgLoad {
            prog_type: BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            insn_cnt: 2,
            insns: ALLOW.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            expected_attach_type: BPF_CGROUP_INET4_CONNECT,
            ..ProgLoad::default()
        };
        let fd = bpf(BPF_PROG_LOAD, &mut load).context("loading the bare connect4 program")?;
        // SAFETY: a new descriptor the kernel just returned, owned by nobody else.
        let program = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd)?) };
        let cgroup = OwnedFd::from(
            std::fs::File::open(cgroup).with_context(|| format!("opening {}", cgroup.display()))?,
        );
        let mut attach = Self::attach_attr(&program, &cgroup);
        bpf(BPF_PROG_ATTACH, &mut attach).context("attaching the bare connect4 program")?;
        let mut info = [0_u32; 2];
        let mut by_fd = InfoByFd {
            bpf_fd: raw(&program),
            info_len: 8,
            info: info.as_mut_ptr() as u64,
        };
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut by_fd).context("reading the bare program's id")?;
        Ok(Self {
            program,
            cgroup,
            id: u64::from(info[1]),
        })
    }

    fn attach_attr(program: &OwnedFd, cgroup: &OwnedFd) -> ProgAttach {
        ProgAttach {
            target_fd: raw(cgroup),
            attach_bpf_fd: raw(program),
            attach_type: BPF_CGROUP_INET4_CONNECT,
            attach_flags: BPF_F_ALLOW_MULTI,
        }
    }
}

impl Drop for BareConnect4 {
    fn drop(&mut self) {
        let mut detach = Self::attach_attr(&self.program, &self.cgroup);
        detach.attach_flags = 0;
        let _ = bpf(BPF_PROG_DETACH, &mut detach);
    }
}

fn raw(fd: &OwnedFd) -> u32 {
    u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
}

fn bpf<T>(command: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live `#[repr(C)]` prefix of `union bpf_attr` of the size passed; the
    // pointers inside it stay valid for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            std::ptr::from_mut(attr),
            size_of::<T>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ret)
}
