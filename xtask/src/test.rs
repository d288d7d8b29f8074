//! `cargo xtask test`: formatting, lints, unit tests and the real-kernel integration tests.

use std::process::Command;

use anyhow::bail;

use crate::shell::{self, cargo};

/// Runs everything; the first failure stops the run.
pub(crate) fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    shell::run(cargo().args(["fmt", "--all", "--check"]))?;
    shell::run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "egress-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let nightly = crate::setup::ebpf_toolchain()?;
    shell::run(Command::new("cargo").args([
        &format!("+{nightly}"),
        "clippy",
        "--package",
        "egress-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--release",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Every manifest against the Kubernetes schemas; example policies against the CRD.
    shell::run(Command::new("python3").arg("deploy/validate.py"))?;
    // The integration tests run the real agent binary: build it first.
    shell::run(cargo().args(["build", "--package", "egress-agent"]))?;
    let kernel = std::env::var("EGRESS_SKIP_KERNEL_TESTS").is_ok_and(|v| v == "1");
    if !kernel && !shell::is_root() {
        bail!(
            "the real-kernel tests need root; run as root (or set EGRESS_SKIP_KERNEL_TESTS=1 by hand to skip them)"
        );
    }
    shell::run(cargo().args(["test", "--workspace", "--exclude", "egress-ebpf"]))?;
    Ok(())
}
