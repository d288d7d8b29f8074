//! Detaching a pinned link now rather than when the kernel gets round to it.
//!
//! Unpinning drops the pin's reference, but bpffs frees the inode from an RCU callback, so on
//! 5.10 the link (and the program on the cgroup) outlives the `unlink` by an unbounded moment.
//! `BPF_LINK_DETACH` (5.9+) takes the program off the cgroup synchronously; unpinning after it
//! only frees the link object.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tracing::debug;

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_DETACH: libc::c_long = 34;

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

/// `BPF_OBJ_GET`: a new fd for the object pinned at `pin`.
fn open_pinned(pin: &Path) -> Option<OwnedFd> {
    let path = CString::new(pin.as_os_str().as_bytes()).ok()?;
    // `union bpf_attr` for OBJ_GET: pathname (u64), bpf_fd (u32), file_flags (u32).
    let pointer = path.as_ptr() as u64;
    #[expect(
        clippy::cast_possible_truncation,
        reason = "splitting a u64 into two u32 halves"
    )]
    let mut attr = [pointer as u32, (pointer >> 32) as u32, 0, 0];
    let fd = bpf(BPF_OBJ_GET, &mut attr).ok()?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).ok()?) })
}

fn raw(fd: &OwnedFd) -> u32 {
    u32::try_from(std::os::fd::AsRawFd::as_raw_fd(fd)).unwrap_or(u32::MAX)
}

fn bpf(command: libc::c_long, attr: &mut [u32]) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid `union bpf_attr` prefix of the size passed; for these commands
    // the kernel only reads it.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, command, attr.as_mut_ptr(), size_of_val(attr)) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}
