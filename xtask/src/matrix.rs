//! The kernel matrix: the real-kernel integration tests on Debian's 5.10 (bullseye), 6.1
//! (bookworm) and 6.12 (trixie) kernels, each booted with virtme-ng over the host's filesystem
//! (QEMU without KVM), besides the host's own kernel.
//!
//! ```text
//! ~/.cache/egress-agent/kernels/<suite>/    apt state, the .deb, its files, vmlinuz, VERSION
//! /lib/modules/<version> -> the cache       so the guest finds its modules (9p, virtio)
//! ```
//!
//! Each kernel is fetched by package name from its suite with a private apt configuration (the
//! host's apt state is untouched), once. In the guest, a script mounts bpffs, brings loopback
//! up and runs each test binary; results come back through a file in a shared directory.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::shell;

/// A kernel of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kernel {
    /// What people call it (`--kernel 5.10`).
    pub(crate) name: &'static str,
    /// The Debian suite its package comes from.
    suite: &'static str,
}

/// Debian's generic kernels (the cloud flavour lacks 9p).
pub(crate) const KERNELS: [Kernel; 3] = [
    Kernel {
        name: "5.10",
        suite: "bullseye",
    },
    Kernel {
        name: "6.1",
        suite: "bookworm",
    },
    Kernel {
        name: "6.12",
        suite: "trixie",
    },
];

/// How much longer waits are in the emulated guests (`EGRESS_TEST_TIME_SCALE`).
const TIME_SCALE: &str = "6";

/// A fetched kernel: its image and release.
struct Image {
    vmlinuz: PathBuf,
    release: String,
}

fn cache() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
    PathBuf::from(home).join(".cache/egress-agent/kernels")
}

/// Fetches `kernel` (once) and makes its modules visible under /lib/modules.
fn fetch(kernel: Kernel) -> anyhow::Result<Image> {
    let base = cache().join(kernel.suite);
    let version_file = base.join("VERSION");
    let vmlinuz = base.join("vmlinuz");
    if !(version_file.exists() && vmlinuz.exists()) {
        download(kernel, &base)?;
    }
    let release = std::fs::read_to_string(&version_file)?.trim().to_owned();
    let modules = ["root/lib/modules", "root/usr/lib/modules"]
        .iter()
        .map(|dir| base.join(dir).join(&release))
        .find(|dir| dir.is_dir())
        .with_context(|| format!("no modules for {release} under {}", base.display()))?;
    let link = Path::new("/lib/modules").join(&release);
    if std::fs::canonicalize(&link).ok() != std::fs::canonicalize(&modules).ok() {
        std::fs::create_dir_all("/lib/modules")?;
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir_all(&link);
        std::os::unix::fs::symlink(&modules, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    if !modules.join("modules.dep.bin").exists() {
        shell::run(Command::new("depmod").args(["-a", &release]))?;
    }
    Ok(Image { vmlinuz, release })
}

/// Downloads the suite's generic kernel package with a private apt configuration.
fn download(kernel: Kernel, base: &Path) -> anyhow::Result<()> {
    println!(
        "matrix: fetching the {} kernel ({})",
        kernel.name, kernel.suite
    );
    for dir in ["apt/lists/partial", "apt/cache/archives/partial", "debs"] {
        std::fs::create_dir_all(base.join(dir))?;
    }
    let sources = base.join("apt/sources.list");
    std::fs::write(
        &sources,
        format!("deb http://deb.debian.org/debian {} main\n", kernel.suite),
    )?;
    let options: Vec<String> = [
        format!("Dir::Etc::sourcelist={}", sources.display()),
        "Dir::Etc::sourceparts=-".to_owned(),
        format!("Dir::State::Lists={}", base.join("apt/lists").display()),
        format!("Dir::Cache={}", base.join("apt/cache").display()),
        "Dir::State::status=/dev/null".to_owned(),
        "Debug::NoLocking=1".to_owned(),
        "APT::Sandbox::User=root".to_owned(),
        "Acquire::Languages=none".to_owned(),
        "APT::Architecture=amd64".to_owned(),
        "APT::Architectures=amd64".to_owned(),
    ]
    .iter()
    .flat_map(|o| ["-o".to_owned(), o.clone()])
    .collect();
    shell::run(
        Command::new("apt-get")
            .args(&options)
            .args(["-qq", "update"]),
    )?;
    // linux-image-amd64 depends on the suite's current generic image; its -unsigned twin is the
    // same kernel without the signature.
    let depends = shell::output(
        Command::new("apt-cache")
            .args(&options)
            .args(["depends", "linux-image-amd64"]),
    )?;
    let package = depends
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .map(|rest| rest.split_whitespace().next().unwrap_or_default())
        .find(|name| name.starts_with("linux-image-") && name.ends_with("-amd64"))
        .with_context(|| format!("no linux-image package in {}", kernel.suite))?
        .to_owned();
    let unsigned = format!("{package}-unsigned");
    let package = if shell::works_in(
        Command::new("apt-cache")
            .args(&options)
            .args(["show", &unsigned]),
    ) {
        unsigned
    } else {
        package
    };
    let debs = base.join("debs");
    for entry in std::fs::read_dir(&debs)?.flatten() {
        std::fs::remove_file(entry.path())?;
    }
    shell::run(
        Command::new("apt-get")
            .args(&options)
            .args(["-qq", "download", &package])
            .current_dir(&debs),
    )?;
    let deb = std::fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let root = base.join("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    shell::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
    let release = ["lib/modules", "usr/lib/modules"]
        .iter()
        .filter_map(|dir| std::fs::read_dir(root.join(dir)).ok())
        .flat_map(Iterator::flatten)
        .find_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .with_context(|| format!("no modules directory in {package}"))?;
    let _ = std::fs::remove_file(base.join("vmlinuz"));
    std::os::unix::fs::symlink(
        root.join("boot").join(format!("vmlinuz-{release}")),
        base.join("vmlinuz"),
    )?;
    std::fs::write(base.join("VERSION"), format!("{release}\n"))?;
    Ok(())
}

/// What one kernel's run found.
pub(crate) struct Outcome {
    /// The kernel's name.
    pub(crate) kernel: &'static str,
    /// Its release.
    pub(crate) release: String,
    /// Each test binary: (name, passed, seconds).
    pub(crate) suites: Vec<(String, bool, f64)>,
}

/// Boots `kernel` and runs every test binary in it; output streams to the terminal.
pub(crate) fn run(kernel: Kernel, binaries: &[PathBuf]) -> anyhow::Result<Outcome> {
    let image = fetch(kernel)?;
    let dir = std::env::temp_dir().join(format!("egress-matrix-{}", kernel.name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut script = String::from(
        "#!/bin/sh\n# Runs in the guest: one line per suite in results, its output in <name>.log.\n\
         mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf\n\
         ip link set lo up\n",
    );
    let _ = writeln!(script, "cd {}", shell::root().display());
    let _ = writeln!(script, "export EGRESS_TEST_TIME_SCALE={TIME_SCALE}");
    let _ = writeln!(script, "uname -r > {}/release", dir.display());
    for binary in binaries {
        let name = suite_name(binary);
        let log = dir.join(format!("{name}.log"));
        let _ = writeln!(
            script,
            "start=$(date +%s); {bin} --test-threads=2 > {log} 2>&1; rc=$?; \
             echo \"{name} $rc $(( $(date +%s) - start ))\" >> {results}",
            bin = binary.display(),
            log = log.display(),
            results = dir.join("results").display(),
        );
    }
    let script_path = dir.join("run.sh");
    std::fs::write(&script_path, script)?;
    println!(
        "matrix: booting {} ({}) with {} suites",
        kernel.name,
        image.release,
        binaries.len()
    );
    let started = Instant::now();
    // vng's output goes through a pipe: QEMU reopens a file at offset 0 and would overwrite.
    let status = Command::new("vng")
        .arg("--run")
        .arg(&image.vmlinuz)
        .args([
            "--force-9p",
            "--disable-kvm",
            "--memory",
            "2G",
            "--cpus",
            "2",
        ])
        .arg("--rwdir")
        .arg(&dir)
        .arg("--exec")
        .arg(format!("sh {}", script_path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .context("starting vng (installed by `cargo xtask setup`)")?;
    let release = std::fs::read_to_string(dir.join("release"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    if release.is_empty() {
        bail!(
            "kernel {}: the guest did not run the tests ({}); vng said:\n{}{}",
            kernel.name,
            status.status,
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        );
    }
    let results = std::fs::read_to_string(dir.join("results")).unwrap_or_default();
    let mut suites = Vec::new();
    for binary in binaries {
        let name = suite_name(binary);
        let line = results
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name));
        let (passed, seconds) = line.map_or((false, 0.0), |l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (
                fields.get(1) == Some(&"0"),
                fields.get(2).and_then(|s| s.parse().ok()).unwrap_or(0.0),
            )
        });
        let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        println!("---- kernel {} ({release}): {name} ----", kernel.name);
        print!("{log}");
        suites.push((name.to_owned(), passed, seconds));
    }
    println!(
        "matrix: kernel {} done in {:.0} s",
        kernel.name,
        started.elapsed().as_secs_f64()
    );
    Ok(Outcome {
        kernel: kernel.name,
        release,
        suites,
    })
}

/// `datapath` for `target/release/deps/datapath-0123abcd`.
/// `lifecycle` for `target/release/deps/lifecycle-0123abcd`.
pub(crate) fn suite_name(binary: &Path) -> &str {
    let file = binary
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    file.rsplit_once('-').map_or(file, |(name, _)| name)
}
