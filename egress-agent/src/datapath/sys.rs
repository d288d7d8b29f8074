//! The few `bpf()` commands aya 0.14 does not offer in the form the loader needs, as raw
//! syscalls. Each needs only `CAP_BPF` (none on recent kernels for pins the caller can open):
//!
//! * `BPF_LINK_DETACH` (5.9+): takes a pinned link's program off its cgroup now. Unpinning
//!   alone drops the pin's reference, but bpffs frees the inode from an RCU callback, so on 5.10
//!   the program stays on the cgroup for an unbounded moment after `unlink`.
//! * `BPF_OBJ_GET_INFO_BY_FD` on a pinned program, with its map ids: aya reopens a program by
//!   id to list its maps (`BPF_PROG_GET_FD_BY_ID`), which needs `CAP_SYS_ADMIN`.
//! * `BPF_LINK_CREATE` and `BPF_OBJ_PIN` for the setsockopt hook: aya 0.14 cannot turn a
//!   sockopt link into a pinnable one.
//! * `BPF_MAP_LOOKUP_AND_DELETE_ELEM` on a hash map (5.14+): aya offers it only for queues and
//!   stacks.
//!
//! And one that is not `bpf()`: `membarrier(MEMBARRIER_CMD_GLOBAL)`, which waits for an RCU
//! grace period, so for every program run that started before it (see [`wait_for_programs`]).

use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use tracing::debug;

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_CGROUP_SETSOCKOPT`.
pub(super) const CGROUP_SETSOCKOPT: u32 = 22;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_DETACH: libc::c_long = 34;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
/// The kernel's internal `ENOTSUPP`, which `bpf()` returns as is.
const ENOTSUPP: i32 = 524;
/// Map ids read per program (ours use 15).
const MAX_MAP_IDS: usize = 64;

/// A pinned program's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ProgramIdentity {
    /// The kernel's id.
    pub id: u32,
    /// The tag (a hash of the instructions), read big-endian as aya does.
    pub tag: u64,
    /// The ids of the maps it uses.
    pub map_ids: Vec<u32>,
}

/// Detaches the link pinned at `pin`, if there is one. Failure is not an error: the caller
/// unpins next, which detaches eventually.
pub(super) fn detach_pinned(pin: &Path) {
    let Some(link) = open_pinned(pin) else {
        return;
    };
    if let Err(error) = bpf(BPF_LINK_DETACH, &mut [raw(&link), 0]) {
        debug!(pin = %pin.display(), %error, "link detach failed; unpinning instead");
    }
}

/// The identity of the program pinned at `pin`.
pub(super) fn pinned_program(pin: &Path) -> Option<ProgramIdentity> {
    let program = open_pinned(pin)?;
    let mut map_ids = [0_u32; MAX_MAP_IDS];
    // `struct bpf_prog_info` up to and including `map_ids` (64 bytes): type, id, tag[8],
    // jited/xlated lengths and pointers, load_time, created_by_uid, nr_map_ids, map_ids.
    let mut info = [0_u32; 16];
    info[13] = u32::try_from(MAX_MAP_IDS).ok()?;
    let pointer = map_ids.as_mut_ptr() as u64;
    (info[14], info[15]) = split(pointer);
    let info_pointer = info.as_mut_ptr() as u64;
    let (low, high) = split(info_pointer);
    bpf(
        BPF_OBJ_GET_INFO_BY_FD,
        &mut [
            raw(&program),
            u32::try_from(size_of_val(&info)).ok()?,
            low,
            high,
        ],
    )
    .ok()?;
    let count = usize::try_from(info[13]).ok()?.min(MAX_MAP_IDS);
    // Big-endian, as aya reads it (`ProgramInfo::tag`), so the two compare.
    let tag = u64::from_be_bytes(
        [info[2].to_ne_bytes(), info[3].to_ne_bytes()]
            .concat()
            .try_into()
            .ok()?,
    );
    Some(ProgramIdentity {
        id: info[1],
        tag,
        map_ids: map_ids[..count].to_vec(),
    })
}

/// Attaches `program` to `cgroup` as `attach_type` with a link, and pins the link at `pin`.
pub(super) fn link_and_pin(
    program: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
    pin: &Path,
) -> std::io::Result<()> {
    let fd = |fd: BorrowedFd<'_>| u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX);
    // `union bpf_attr` for LINK_CREATE: prog_fd, target_fd, attach_type, flags.
    let link = bpf(
        BPF_LINK_CREATE,
        &mut [fd(program), fd(cgroup), attach_type, 0, 0, 0, 0, 0],
    )?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    let link = unsafe { OwnedFd::from_raw_fd(i32::try_from(link).map_err(std::io::Error::other)?) };
    let path = CString::new(pin.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let (low, high) = split(path.as_ptr() as u64);
    bpf(BPF_OBJ_PIN, &mut [low, high, raw(&link), 0])?;
    Ok(())
}

/// `BPF_OBJ_GET`: a new fd for the object pinned at `pin`.
fn open_pinned(pin: &Path) -> Option<OwnedFd> {
    let path = CString::new(pin.as_os_str().as_bytes()).ok()?;
    // `union bpf_attr` for OBJ_GET: pathname (u64), bpf_fd (u32), file_flags (u32).
    let (low, high) = split(path.as_ptr() as u64);
    let fd = bpf(BPF_OBJ_GET, &mut [low, high, 0, 0]).ok()?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).ok()?) })
}

/// A u64 as the two u32 halves of its in-memory (little-endian) layout.
#[expect(
    clippy::cast_possible_truncation,
    reason = "splitting a u64 into two u32 halves"
)]
const fn split(value: u64) -> (u32, u32) {
    (value as u32, (value >> 32) as u32)
}

fn raw(fd: &OwnedFd) -> u32 {
    u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
}

pub(super) fn bpf(command: libc::c_long, attr: &mut [u32]) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid `union bpf_attr` prefix of the size passed, and any pointers
    // in it point at live buffers of the sizes given; the kernel writes only into those.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, command, attr.as_mut_ptr(), size_of_val(attr)) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `BPF_MAP_LOOKUP_AND_DELETE_ELEM`: removes `key` from a hash map and writes the value it held
/// into `value`, in one step, so no update in between is lost. `Ok(false)`: no such key.
pub(super) fn lookup_and_delete<K: aya::Pod, V: aya::Pod>(
    map: BorrowedFd<'_>,
    key: &K,
    value: &mut V,
) -> std::io::Result<bool> {
    let (key_low, key_high) = split(std::ptr::from_ref(key) as u64);
    let (value_low, value_high) = split(std::ptr::from_mut(value) as u64);
    let fd = u32::try_from(map.as_raw_fd()).unwrap_or(u32::MAX);
    // `union bpf_attr` for map element commands: map_fd, padding, key, value, flags.
    let mut attr = [fd, 0, key_low, key_high, value_low, value_high, 0, 0];
    match bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Whether a [`lookup_and_delete`] error means the kernel lacks the command for hash maps
/// (5.10 to 5.13 answer `ENOTSUPP`).
pub(super) fn lacks_lookup_and_delete(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(ENOTSUPP | libc::EOPNOTSUPP))
}

/// `MEMBARRIER_CMD_GLOBAL`.
const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;

/// Waits until every eBPF program run that started before the call has finished.
///
/// The hooks run inside RCU read-side sections, and `MEMBARRIER_CMD_GLOBAL` is
/// `synchronize_rcu()`, so a map write made before the call is seen by every later run. It
/// needs no privilege; it fails on `nohz_full` kernels (`EINVAL`), and on a single CPU the
/// kernel returns at once.
pub fn wait_for_programs() -> std::io::Result<()> {
    // SAFETY: a syscall without pointers.
    let ret = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
