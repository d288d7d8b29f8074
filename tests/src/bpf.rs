//! Raw `bpf()` calls for fixtures and measurements: maps of an older layout, created and
//! pinned the way an older agent left them, so upgrade tests start from real kernel objects;
//! and reads of the agent's pinned maps, cheap enough to poll in a tight loop when timing how
//! fast an entry appears.

use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;

/// `BPF_MAP_TYPE_HASH`.
pub const HASH: u32 = 1;
/// `BPF_MAP_TYPE_LPM_TRIE`.
pub const LPM_TRIE: u32 = 11;
/// `BPF_F_NO_PREALLOC` (LPM tries need it).
pub const NO_PREALLOC: u32 = 1;

fn try_bpf(command: libc::c_long, attr: &mut [u32]) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid `union bpf_attr` prefix of the size passed; pointers in it
    // point at live buffers of the sizes the command implies.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, command, attr.as_mut_ptr(), size_of_val(attr)) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn bpf(command: libc::c_long, attr: &mut [u32]) -> libc::c_long {
    try_bpf(command, attr).unwrap_or_else(|err| panic!("bpf({command}): {err}"))
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "splitting a pointer into u32 halves"
)]
const fn halves(value: u64) -> (u32, u32) {
    (value as u32, (value >> 32) as u32)
}

/// Below 5.11 map memory is charged to `RLIMIT_MEMLOCK` (64 KiB by default): lift it, as the
/// agent does.
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit; failure only matters on old kernels, where map creation says so.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) };
}

/// A pinned map at `pin` (its parent directory is created).
pub struct PinnedMap {
    fd: OwnedFd,
}

impl PinnedMap {
    /// Creates a map (`kind`, key and value sizes, capacity, flags) and pins it at `pin`.
    pub fn create(pin: &Path, kind: u32, key: u32, value: u32, entries: u32, flags: u32) -> Self {
        raise_memlock();
        if let Some(dir) = pin.parent() {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|err| panic!("mkdir {}: {err}", dir.display()));
        }
        let fd = bpf(
            BPF_MAP_CREATE,
            &mut [kind, key, value, entries, flags, 0, 0, 0, 0, 0],
        );
        // SAFETY: the kernel just returned this fd.
        let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).expect("fd")) };
        let path = CString::new(pin.as_os_str().as_bytes()).expect("path");
        let (low, high) = halves(path.as_ptr() as u64);
        bpf(
            BPF_OBJ_PIN,
            &mut [low, high, u32::try_from(fd.as_raw_fd()).expect("fd"), 0],
        );
        Self { fd }
    }

    /// Opens the map pinned at `pin`.
    pub fn open(pin: &Path) -> Self {
        let path = CString::new(pin.as_os_str().as_bytes()).expect("path");
        let (low, high) = halves(path.as_ptr() as u64);
        let fd = bpf(BPF_OBJ_GET, &mut [low, high, 0, 0]);
        // SAFETY: the kernel just returned this fd.
        let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).expect("fd")) };
        Self { fd }
    }

    /// The value at `key` (`value_len` bytes; per-CPU maps are not supported).
    pub fn lookup(&self, key: &[u8], value_len: usize) -> Option<Vec<u8>> {
        let mut value = vec![0_u8; value_len];
        let (key_low, key_high) = halves(key.as_ptr() as u64);
        let (value_low, value_high) = halves(value.as_mut_ptr() as u64);
        let fd = u32::try_from(self.fd.as_raw_fd()).expect("fd");
        try_bpf(
            BPF_MAP_LOOKUP_ELEM,
            &mut [fd, 0, key_low, key_high, value_low, value_high, 0, 0],
        )
        .ok()?;
        Some(value)
    }

    /// Every key (`key_len` bytes each).
    pub fn keys(&self, key_len: usize) -> Vec<Vec<u8>> {
        let fd = u32::try_from(self.fd.as_raw_fd()).expect("fd");
        let mut keys = Vec::new();
        let mut current: Option<Vec<u8>> = None;
        loop {
            let mut next = vec![0_u8; key_len];
            let (key_low, key_high) = current
                .as_ref()
                .map_or((0, 0), |k| halves(k.as_ptr() as u64));
            let (next_low, next_high) = halves(next.as_mut_ptr() as u64);
            if try_bpf(
                BPF_MAP_GET_NEXT_KEY,
                &mut [fd, 0, key_low, key_high, next_low, next_high],
            )
            .is_err()
            {
                return keys;
            }
            keys.push(next.clone());
            current = Some(next);
        }
    }

    /// Sets `key` to `value`.
    pub fn update(&self, key: &[u8], value: &[u8]) {
        let (key_low, key_high) = halves(key.as_ptr() as u64);
        let (value_low, value_high) = halves(value.as_ptr() as u64);
        let fd = u32::try_from(self.fd.as_raw_fd()).expect("fd");
        bpf(
            BPF_MAP_UPDATE_ELEM,
            &mut [fd, 0, key_low, key_high, value_low, value_high, 0, 0],
        );
    }
}
