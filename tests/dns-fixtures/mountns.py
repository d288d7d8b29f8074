"""Private mount namespace with another /etc/resolv.conf, for the clients whose resolver reads it
(glibc here; the musl client does the same in C). Needs root (CAP_SYS_ADMIN)."""
import ctypes
import os
import tempfile

CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
    return libc


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def use_resolv_conf(path):
    """Moves this (still single-threaded) process into a new mount namespace where `path` is
    bind-mounted over /etc/resolv.conf, /etc/nsswitch.conf says `hosts: files dns` (so glibc asks
    DNS, not systemd-resolved/mdns/...), and nscd's socket directory is hidden (no cache)."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise OSError(2, f"{path}: not a file")
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    _check(libc.mount(path.encode(), b"/etc/resolv.conf", None, MS_BIND, None), "bind resolv.conf")
    try:
        with open("/etc/nsswitch.conf", encoding="utf-8") as f:
            lines = [line for line in f if not line.lstrip().startswith("hosts:")]
    except OSError:
        lines = []
    with tempfile.NamedTemporaryFile("w", prefix="nsswitch.", delete=False) as tmp:
        tmp.write("".join(lines) + "hosts: files dns\n")
    try:
        if os.path.exists("/etc/nsswitch.conf"):
            _check(libc.mount(tmp.name.encode(), b"/etc/nsswitch.conf", None, MS_BIND, None), "bind nsswitch.conf")
    finally:
        os.unlink(tmp.name)
    for nscd in ("/run/nscd", "/var/run/nscd", "/var/db/nscd"):
        if os.path.isdir(nscd) and not os.path.islink(nscd):
            _check(libc.mount(b"tmpfs", nscd.encode(), b"tmpfs", 0, None), f"tmpfs over {nscd}")
