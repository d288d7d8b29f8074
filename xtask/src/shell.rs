//! Running commands.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

/// The workspace root.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// Runs `command` in the workspace root, echoing it; fails on a non-zero exit.
pub(crate) fn run(command: &mut Command) -> anyhow::Result<()> {
    command.current_dir(root());
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

/// Whether `program` runs at all (`program args` exits 0).
pub(crate) fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether `command` exits 0 (its output discarded).
pub(crate) fn works_in(command: &mut Command) -> bool {
    command.output().is_ok_and(|o| o.status.success())
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
