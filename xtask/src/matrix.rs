//! The kernel matrix: the real-kernel integration tests on Debian's 5.10 (bullseye), 6.1
//! (bookworm) and 6.12 (trixie) kernels, each booted with virtme-ng over the host's filesystem
//! (QEMU without KVM), besides the host's own kernel.
//!
//! ```text
//! ~/.cache/egress-agent/kernels/<suite>/    apt state, the package's files, COMPLETE
//! /lib/modules/<version> -> the cache       so the guest finds its modules (9p, virtio)
//! ```
//!
//! Each kernel is fetched by package name from its suite with a private apt configuration (the
//! host's apt state is untouched), checked against the suite's index (size, SHA-256,
//! `dpkg-deb --info`), and retried with backoff. `COMPLETE` is written last: a cache without
//! it, or missing the image or modules it names, is fetched again, never trusted. In the guest, a script mounts bpffs, brings loopback
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

/// Where the kernels are kept: `EGRESS_KERNEL_CACHE`, else `~/.cache/egress-agent/kernels`. CI
/// points it at an empty directory, so every run takes the fresh-machine path.
fn cache() -> PathBuf {
    std::env::var_os("EGRESS_KERNEL_CACHE")
        .map_or_else(|| shell::cache_dir().join("kernels"), PathBuf::from)
}

/// The file written last, when the image, its modules and its release are all in place: a
/// cache without it (or whose parts it names are missing) is half-written and fetched again.
const COMPLETE: &str = "COMPLETE";

/// Fetches `kernel` (once) and makes its modules visible under /lib/modules.
fn fetch(kernel: Kernel) -> anyhow::Result<Image> {
    let base = cache().join(kernel.suite);
    let image = match cached(&base) {
        Ok(image) => image,
        Err(why) => {
            if base.exists() {
                println!(
                    "matrix: the cached {} kernel is incomplete ({why:#}): fetching it again",
                    kernel.name
                );
            }
            shell::retrying(
                &format!("matrix: fetching the {} kernel", kernel.name),
                || download(kernel, &base),
            )?;
            cached(&base).context("the kernel just fetched is incomplete")?
        }
    };
    let modules = modules_dir(&base, &image.release)?;
    let link = Path::new("/lib/modules").join(&image.release);
    if std::fs::canonicalize(&link).ok() != std::fs::canonicalize(&modules).ok() {
        std::fs::create_dir_all("/lib/modules")?;
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir_all(&link);
        std::os::unix::fs::symlink(&modules, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    if !modules.join("modules.dep.bin").exists() {
        shell::run(Command::new("depmod").args(["-a", &image.release]))?;
    }
    Ok(image)
}

/// The cached kernel under `base`, checked whole: the completion mark, the image it names and
/// its modules.
fn cached(base: &Path) -> anyhow::Result<Image> {
    let mark = base.join(COMPLETE);
    let release = std::fs::read_to_string(&mark)
        .with_context(|| format!("no {}", mark.display()))?
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    if release.is_empty() {
        bail!("{} names no release", mark.display());
    }
    let vmlinuz = base.join("root/boot").join(format!("vmlinuz-{release}"));
    let size = std::fs::metadata(&vmlinuz)
        .with_context(|| format!("no {}", vmlinuz.display()))?
        .len();
    if size == 0 {
        bail!("{} is empty", vmlinuz.display());
    }
    let modules = modules_dir(base, &release)?;
    if !modules.join("modules.order").is_file() {
        bail!("{} has no modules.order", modules.display());
    }
    Ok(Image { vmlinuz, release })
}

fn modules_dir(base: &Path, release: &str) -> anyhow::Result<PathBuf> {
    ["root/lib/modules", "root/usr/lib/modules"]
        .iter()
        .map(|dir| base.join(dir).join(release))
        .find(|dir| dir.is_dir())
        .with_context(|| format!("no modules for {release} under {}", base.display()))
}

/// A package as the suite's index describes it.
struct Indexed {
    name: String,
    size: u64,
    sha256: String,
}

/// Downloads the suite's generic kernel package with a private apt configuration, checks it
/// against the index, unpacks it and marks the cache complete.
fn download(kernel: Kernel, base: &Path) -> anyhow::Result<()> {
    println!(
        "matrix: fetching the {} kernel ({})",
        kernel.name, kernel.suite
    );
    // Whatever a failed try left is not trusted.
    let _ = std::fs::remove_file(base.join(COMPLETE));
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
        "Acquire::Retries=3".to_owned(),
        "APT::Architecture=amd64".to_owned(),
        "APT::Architectures=amd64".to_owned(),
    ]
    .iter()
    .flat_map(|o| ["-o".to_owned(), o.clone()])
    .collect();
    let apt_cache =
        |args: &[&str]| shell::output(Command::new("apt-cache").args(&options).args(args));
    shell::run(
        Command::new("apt-get")
            .args(&options)
            .args(["-qq", "update"]),
    )?;
    let package = kernel_package(kernel, &apt_cache)?;
    let debs = base.join("debs");
    for entry in std::fs::read_dir(&debs)?.flatten() {
        std::fs::remove_file(entry.path())?;
    }
    shell::run(
        Command::new("apt-get")
            .args(&options)
            .args(["-qq", "download", &package.name])
            .current_dir(&debs),
    )?;
    let deb = std::fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    verify(&deb, &package)?;
    let root = base.join("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    shell::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
    let release = ["lib/modules", "usr/lib/modules"]
        .iter()
        .filter_map(|dir| std::fs::read_dir(root.join(dir)).ok())
        .flat_map(Iterator::flatten)
        .find_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .with_context(|| format!("no modules directory in {}", package.name))?;
    // The unpacked package stands on its own; the .deb is 50-70 MB more on the disk.
    std::fs::remove_file(&deb)?;
    let partial = base.join(format!("{COMPLETE}.partial"));
    std::fs::write(
        &partial,
        format!("{release}\n{} {}\n", package.name, package.sha256),
    )?;
    std::fs::rename(&partial, base.join(COMPLETE))?;
    Ok(())
}

/// The suite's generic kernel package (its unsigned twin where there is one) with the size and
/// hash its index gives.
fn kernel_package(
    kernel: Kernel,
    apt_cache: &dyn Fn(&[&str]) -> anyhow::Result<String>,
) -> anyhow::Result<Indexed> {
    // linux-image-amd64 depends on the suite's current generic image; its -unsigned twin is the
    // same kernel without the signature.
    let depends = apt_cache(&["depends", "linux-image-amd64"])?;
    let signed = depends
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .map(|rest| rest.split_whitespace().next().unwrap_or_default())
        .find(|name| name.starts_with("linux-image-") && name.ends_with("-amd64"))
        .with_context(|| format!("no linux-image package in {}", kernel.suite))?
        .to_owned();
    let unsigned = format!("{signed}-unsigned");
    let (name, record) = match apt_cache(&["show", "--no-all-versions", &unsigned]) {
        Ok(record) if !record.trim().is_empty() => (unsigned, record),
        _ => {
            let record = apt_cache(&["show", "--no-all-versions", &signed])?;
            (signed, record)
        }
    };
    let field = |key: &str| {
        record
            .lines()
            .find_map(|line| line.strip_prefix(key).map(str::trim))
            .with_context(|| format!("the index gives no {key} for {name}"))
    };
    let size = field("Size:")?
        .parse()
        .with_context(|| format!("the index's Size of {name}"))?;
    let sha256 = field("SHA256:")?.to_owned();
    Ok(Indexed { name, size, sha256 })
}

/// Checks the downloaded package against its index entry and that dpkg can read it.
fn verify(deb: &Path, package: &Indexed) -> anyhow::Result<()> {
    use sha2::{Digest as _, Sha256};
    let bytes = std::fs::read(deb).with_context(|| format!("reading {}", deb.display()))?;
    let size = bytes.len() as u64;
    if size != package.size {
        bail!(
            "{} is {size} bytes; the index says {}",
            deb.display(),
            package.size
        );
    }
    let sha256 = shell::hex(&Sha256::digest(&bytes));
    if sha256 != package.sha256 {
        bail!(
            "{} has SHA-256 {sha256}; the index says {}",
            deb.display(),
            package.sha256
        );
    }
    shell::output(Command::new("dpkg-deb").arg("--info").arg(deb))?;
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
