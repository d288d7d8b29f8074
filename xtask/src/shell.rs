//! Running commands.

use std::{fmt::Write as _, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

/// The workspace root.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// Runs `command`, echoing it, in the directory it names or else the workspace root; fails on
/// a non-zero exit.
pub(crate) fn run(command: &mut Command) -> anyhow::Result<()> {
    if command.get_current_dir().is_none() {
        command.current_dir(root());
    }
    println!("+ {}", describe(command));
    let status = command
        .status()
        .with_context(|| format!("starting {}", describe(command)))?;
    if !status.success() {
        bail!("{} failed: {status}", describe(command));
    }
    Ok(())
}

/// Runs `command` and returns its stdout; fails on a non-zero exit.
pub(crate) fn output(command: &mut Command) -> anyhow::Result<String> {
    let out = command
        .output()
        .with_context(|| format!("starting {}", describe(command)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}\n{}",
            describe(command),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How many times a step that fetches over the network is tried.
const FETCH_ATTEMPTS: u32 = 5;

/// Runs `step` until it succeeds, at most [`FETCH_ATTEMPTS`] times, waiting 2, 4, 8… s between
/// tries: for every step that fetches over the network (`what` names it in the log).
pub(crate) fn retrying<T>(
    what: &str,
    mut step: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut wait = std::time::Duration::from_secs(2);
    let mut attempt = 1;
    loop {
        match step() {
            Ok(value) => return Ok(value),
            Err(error) if attempt >= FETCH_ATTEMPTS => {
                return Err(error.context(format!("{what}: failed {FETCH_ATTEMPTS} times")));
            }
            Err(error) => {
                println!(
                    "{what}: attempt {attempt} of {FETCH_ATTEMPTS} failed ({error:#}); again in {} s",
                    wait.as_secs()
                );
                std::thread::sleep(wait);
                wait *= 2;
                attempt += 1;
            }
        }
    }
}

/// [`run`], retried as a network fetch.
pub(crate) fn run_fetch(what: &str, command: &mut Command) -> anyhow::Result<()> {
    retrying(what, || run(command))
}

/// The cache of downloads and builds: `~/.cache/egress-agent`.
pub(crate) fn cache_dir() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
    PathBuf::from(home).join(".cache/egress-agent")
}

/// Whether `program` runs at all (`program args` exits 0).
pub(crate) fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Lower-case hexadecimal of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// `cargo`, as invoked by this xtask.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Whether we are root.
pub(crate) fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Installs what is missing, checks for root, and builds the release agent and the test
/// binaries (probe, demo HTTP processes) that `demo` and `bench` run; `why` says what needs root.
pub(crate) fn release_binaries(why: &str) -> anyhow::Result<()> {
    crate::setup::run()?;
    if !is_root() {
        bail!("{why}: run it as root");
    }
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "egress-agent",
        "--package",
        "egress-tests",
        "--bins",
    ]))
}

/// A release binary of the workspace.
pub(crate) fn release_bin(name: &str) -> PathBuf {
    root().join("target/release").join(name)
}

/// Kills and reaps `children`, then uninstalls the agent pinned under `bpffs_dir`.
pub(crate) fn stop_and_uninstall(
    children: &mut Vec<std::process::Child>,
    bpffs_dir: &std::path::Path,
) {
    for child in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    children.clear();
    let _ = Command::new(release_bin("egress-agent"))
        .args(["uninstall", "--bpffs-dir"])
        .arg(bpffs_dir)
        .output();
}
