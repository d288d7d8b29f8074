//! Raw `bpf()` calls for fixtures: maps of an older layout, created and pinned the way an
//! older agent left them, so upgrade tests start from real kernel objects.

use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_OBJ_PIN: libc::c_long = 6;

/// `BPF_MAP_TYPE_HASH`.
pub const HASH: u32 = 1;
/// `BPF_MAP_TYPE_LPM_TRIE`.
pub const LPM_TRIE: u32 = 11;
/// `BPF_F_NO_PREALLOC` (LPM tries need it).
pub const NO_PREALLOC: u32 = 1;

fn bpf(command: libc::c_long, attr: &mut [u32]) -> libc::c_long {
    // SAFETY: `attr` is a valid `union bpf_attr` prefix of the size passed; pointers in it
    // point at live buffers of the sizes the command implies.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, command, attr.as_mut_ptr(), size_of_val(attr)) };
    assert!(
        rc >= 0,
        "bpf({command}): {}",
        std::io::Error::last_os_error()
    );
    rc
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "splitting a pointer into u32 halves"
)]
const fn halves(value: u64) -> (u32, u32) {
    (value as u32, (value >> 32) as u32)
}

/// A pinned map at `pin` (its parent directory is created).
pub struct PinnedMap {
    fd: OwnedFd,
}

impl PinnedMap {
    /// Creates a map (`kind`, key and value sizes, capacity, flags) and pins it at `pin`.
    pub fn create(pin: &Path, kind: u32, key: u32, value: u32, entries: u32, flags: u32) -> Self {
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
