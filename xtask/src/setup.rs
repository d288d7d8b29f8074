//! `cargo xtask setup`: the eBPF toolchain and the packages tests and benchmarks use.
//!
//! * the nightly pinned in `egress-ebpf/rust-toolchain.toml`, with `rust-src` (aya-build
//!   compiles core for the BPF target with it) and clippy;
//! * bpf-linker built against that nightly's own LLVM (a prefix whose `lib/libLLVM.so` links to
//!   the nightly's libLLVM), so the two agree on the bitcode;
//! * Debian packages: bpftool, iproute2, iptables, nftables, curl, dnsmasq; the stub resolvers
//!   of the learning tests (dig, musl, Go, c-ares, Node); for the kernel matrix
//!   qemu-system-x86, busybox-static, kmod and udev;
//! * from `PyPI`: virtme-ng (the matrix);
//! * bpffs mounted at /sys/fs/bpf.
//!
//! Each step checks first and does nothing when already done.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::shell::{self, works};

/// The bpf-linker release built here (verified with the nightly's LLVM 22).
const BPF_LINKER_VERSION: &str = "0.13.0";
/// LLVM major version of the nightly toolchain; bpf-linker's matching feature.
const LLVM_FEATURE: &str = "llvm-22";
/// Debian packages: (a shell test that proves it is installed, package).
const PACKAGES: [(&str, &str); 17] = [
    ("command -v bpftool", "bpftool"),
    ("command -v ip", "iproute2"),
    ("command -v iptables", "iptables"),
    ("command -v nft", "nftables"),
    ("command -v curl", "curl"),
    ("command -v dnsmasq", "dnsmasq"),
    // Real stub resolvers for the learning tests (tests/dns-fixtures): dig, musl (built
    // static), Go's resolver, c-ares (pycares, for Debian's python3) and Node's c-ares.
    ("command -v dig", "bind9-dnsutils"),
    ("command -v musl-gcc", "musl-tools"),
    ("command -v go", "golang-go"),
    (
        "test -d /usr/lib/python3/dist-packages/pycares",
        "python3-pycares",
    ),
    ("command -v node", "nodejs"),
    // promtool checks the metrics exposition.
    ("command -v promtool", "prometheus"),
    // The benchmark's sidecar proxy.
    ("command -v haproxy", "haproxy"),
    // The kernel matrix: QEMU, virtme-ng's guest init needs busybox and udev (without udev
    // the guest cannot find its output channels), and depmod for the kernels' modules.
    ("command -v qemu-system-x86_64", "qemu-system-x86"),
    ("command -v busybox", "busybox-static"),
    ("command -v depmod", "kmod"),
    ("command -v udevadm", "udev"),
];

/// Runs every step.
pub(crate) fn run() -> anyhow::Result<()> {
    let nightly = ebpf_toolchain()?;
    nightly_toolchain(&nightly)?;
    bpf_linker(&nightly)?;
    packages()?;
    python_packages()?;
    bpffs()?;
    verify(&nightly)?;
    println!("setup: done");
    Ok(())
}

/// The nightly that builds the eBPF programs: the channel in `egress-ebpf/rust-toolchain.toml`
/// (which egress-agent/build.rs reads too).
pub(crate) fn ebpf_toolchain() -> anyhow::Result<String> {
    let path = shell::root().join("egress-ebpf/rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|line| line.trim().strip_prefix("channel"))
        .and_then(|rest| rest.split('"').nth(1))
        .map(str::to_owned)
        .with_context(|| format!("no channel in {}", path.display()))
}

fn sysroot(toolchain: &str) -> anyhow::Result<PathBuf> {
    let sysroot = shell::output(Command::new("rustc").args([
        &format!("+{toolchain}"),
        "--print",
        "sysroot",
    ]))?;
    Ok(PathBuf::from(sysroot.trim()))
}

fn nightly_toolchain(toolchain: &str) -> anyhow::Result<()> {
    let ready = sysroot(toolchain).is_ok_and(|sysroot| {
        sysroot.join("lib/rustlib/src/rust/library/core").exists()
            && works("cargo", &[&format!("+{toolchain}"), "clippy", "--version"])
    });
    if ready {
        return Ok(());
    }
    shell::run_fetch(
        "setup: the eBPF nightly",
        Command::new("rustup").args([
            "toolchain",
            "install",
            toolchain,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
            "--component",
            "clippy",
        ]),
    )
}

/// bpf-linker links the nightly's libLLVM dynamically, so it runs where the nightly's library
/// path is set: under `rustup run <nightly>`, which is how aya-build invokes the eBPF build. It
/// counts only at the pinned version: a changed pin rebuilds it.
fn bpf_linker_works(toolchain: &str) -> bool {
    shell::output(Command::new("rustup").args(["run", toolchain, "bpf-linker", "--version"]))
        .is_ok_and(|version| version.split_whitespace().nth(1) == Some(BPF_LINKER_VERSION))
}

fn bpf_linker(toolchain: &str) -> anyhow::Result<()> {
    if bpf_linker_works(toolchain) {
        return Ok(());
    }
    let sysroot = sysroot(toolchain)?;
    let lib = sysroot.join("lib");
    let libllvm = std::fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let prefix = shell::cache_dir().join("llvm-prefix");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)
        .with_context(|| format!("linking {}", link.display()))?;
    println!(
        "setup: building bpf-linker against {} (a few minutes)",
        libllvm.display()
    );
    shell::run_fetch(
        "setup: bpf-linker",
        shell::cargo()
            .args([
                "install",
                "--force",
                "--locked",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                LLVM_FEATURE,
            ])
            .env("LLVM_PREFIX", &prefix),
    )?;
    if !bpf_linker_works(toolchain) {
        bail!(
            "bpf-linker was installed but `rustup run {toolchain} bpf-linker --version` fails; is ~/.cargo/bin on PATH?"
        );
    }
    Ok(())
}

/// Mounts bpffs at /sys/fs/bpf when it is missing, once, before anything runs in parallel: two
/// agents mounting it at the same moment would stack mounts and hide each other's pins.
fn bpffs() -> anyhow::Result<()> {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|line| {
            line.split(" - ")
                .nth(1)
                .is_some_and(|r| r.starts_with("bpf "))
                && line.split_whitespace().nth(4) == Some("/sys/fs/bpf")
        });
    if mounted || !shell::is_root() {
        return Ok(());
    }
    shell::run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

/// From `PyPI`, each at its pinned version (another installed version is replaced): virtme-ng
/// (`vng`) boots the matrix's kernels. (`deploy/` needs nothing here: the `cluster` suite
/// applies it to a real API server, and unit tests check what crosses its documents.)
const PYTHON_PACKAGES: [(&str, &str); 1] = [("virtme-ng", "1.42")];

fn python_packages() -> anyhow::Result<()> {
    for (package, version) in PYTHON_PACKAGES {
        if python_version(package).as_deref() == Some(version) {
            continue;
        }
        shell::run_fetch(
            &format!("setup: {package}"),
            Command::new("python3").args([
                "-m",
                "pip",
                "install",
                "--quiet",
                &format!("{package}=={version}"),
            ]),
        )?;
    }
    if !works("sh", &["-c", "command -v vng"]) {
        bail!("virtme-ng is installed but `vng` is not on PATH");
    }
    Ok(())
}

/// The installed version of a Python package.
fn python_version(package: &str) -> Option<String> {
    shell::output(Command::new("python3").args([
        "-c",
        "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))",
        package,
    ]))
    .ok()
    .map(|v| v.trim().to_owned())
}

/// Checks, after the steps, that every pinned tool is there at its pin; fails naming each that
/// is not.
fn verify(nightly: &str) -> anyhow::Result<()> {
    let mut wrong = Vec::new();
    if !sysroot(nightly).is_ok_and(|s| s.join("lib/rustlib/src/rust/library/core").exists()) {
        wrong.push(format!("{nightly} with rust-src"));
    }
    if !bpf_linker_works(nightly) {
        wrong.push(format!("bpf-linker {BPF_LINKER_VERSION}"));
    }
    for (package, version) in PYTHON_PACKAGES {
        if python_version(package).as_deref() != Some(version) {
            wrong.push(format!("{package} {version}"));
        }
    }
    if !wrong.is_empty() {
        bail!("not installed at their pins: {}", wrong.join(", "));
    }
    let pins: Vec<String> = PYTHON_PACKAGES
        .iter()
        .map(|(package, version)| format!("{package} {version}"))
        .collect();
    println!(
        "setup: at their pins: {nightly} with rust-src, bpf-linker {BPF_LINKER_VERSION}, {}",
        pins.join(", ")
    );
    Ok(())
}

fn packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(check, _)| !works("sh", &["-c", check]))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !shell::is_root() {
        bail!("missing packages {missing:?}: run `cargo xtask setup` as root, or install them");
    }
    shell::run_fetch(
        "setup: apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    shell::run_fetch(
        "setup: Debian packages",
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
