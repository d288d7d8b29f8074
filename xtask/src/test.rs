//! `cargo xtask test`: formatting, lints, unit tests, then the real-kernel integration tests on
//! the host's kernel and on each kernel of the matrix (see `matrix.rs`). A failing suite fails
//! the run, and the summary names its kernel.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::{
    matrix::{self, KERNELS},
    shell::{self, cargo},
};

/// Which kernels to run the integration tests on (`host`, `5.10`, `6.1`, `6.12` or `all`), and
/// which suites (the test binaries of `tests/tests`; empty means all). The `cluster` suite runs
/// on the host's kernel only: it needs the real cluster, which `cluster::build` makes.
pub(crate) fn run(kernels: &[String], suites: &[String]) -> anyhow::Result<()> {
    let (host, matrix) = select(kernels)?;
    crate::setup::run()?;
    lint()?;
    // Unit tests (the default members): no root needed.
    shell::run(cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "egress-ebpf",
        "--exclude",
        "egress-tests",
    ]))?;
    let kernel_tests = !std::env::var("EGRESS_SKIP_KERNEL_TESTS").is_ok_and(|v| v == "1");
    if !kernel_tests {
        println!("test: EGRESS_SKIP_KERNEL_TESTS=1: skipping the real-kernel tests");
        return Ok(());
    }
    if !shell::is_root() {
        bail!(
            "the real-kernel tests need root; run as root (or set EGRESS_SKIP_KERNEL_TESTS=1 by hand to skip them)"
        );
    }
    if host {
        // The agent's own tests that need the kernel (its maps).
        shell::run(cargo().args([
            "test",
            "--package",
            "egress-agent",
            "--lib",
            "--",
            "--ignored",
        ]))?;
    }
    // Release builds: the emulated guests run them an order of magnitude faster than debug.
    shell::run(cargo().args(["build", "--release", "--package", "egress-agent"]))?;
    let binaries = select_suites(test_binaries()?, suites)?;
    // The compiled stub resolvers (musl, Go), built here rather than in the slow guests.
    let clients = shell::root().join("target/release/dns-fixtures");
    egress_tests::resolvers::build_clients(&clients).map_err(anyhow::Error::msg)?;
    let (cluster, others): (Vec<PathBuf>, Vec<PathBuf>) = binaries
        .into_iter()
        .partition(|b| matrix::suite_name(b) == CLUSTER_SUITE);
    let mut outcomes = Vec::new();
    if host {
        let mut host_binaries = others.clone();
        let mut environment = Vec::new();
        if !cluster.is_empty() {
            let built = crate::cluster::build()?;
            environment.push(("EGRESS_CLUSTER_BIN", built.binary));
            environment.push(("EGRESS_GATEWAY_API_CRDS", built.gateway_crds));
            host_binaries.extend(cluster);
        }
        outcomes.push(run_host(&host_binaries, &environment)?);
    }
    for kernel in matrix {
        if !others.is_empty() {
            outcomes.push(matrix::run(kernel, &others)?);
        }
    }
    summarize(&outcomes)
}

fn select(kernels: &[String]) -> anyhow::Result<(bool, Vec<matrix::Kernel>)> {
    let all = kernels.is_empty() || kernels.iter().any(|k| k == "all");
    let host = all || kernels.iter().any(|k| k == "host");
    let mut matrix = Vec::new();
    for kernel in KERNELS {
        if all || kernels.iter().any(|k| k == kernel.name) {
            matrix.push(kernel);
        }
    }
    for kernel in kernels {
        if kernel != "all" && kernel != "host" && !KERNELS.iter().any(|k| k.name == kernel) {
            bail!("unknown kernel {kernel:?}: use host, 5.10, 6.1, 6.12 or all");
        }
    }
    Ok((host, matrix))
}

fn select_suites(binaries: Vec<PathBuf>, suites: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let names: Vec<&str> = binaries.iter().map(|b| matrix::suite_name(b)).collect();
    if let Some(unknown) = suites.iter().find(|s| !names.contains(&s.as_str())) {
        bail!("unknown suite {unknown:?}: use one of {}", names.join(", "));
    }
    Ok(binaries
        .into_iter()
        .filter(|b| suites.is_empty() || suites.iter().any(|s| s == matrix::suite_name(b)))
        .collect())
}

fn lint() -> anyhow::Result<()> {
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
    ]))
}

/// Builds the integration test binaries (release) and returns their paths.
fn test_binaries() -> anyhow::Result<Vec<PathBuf>> {
    let out = shell::output(cargo().args([
        "test",
        "--release",
        "--package",
        "egress-tests",
        "--no-run",
        "--message-format=json",
    ]))?;
    let mut binaries = Vec::new();
    for line in out.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test_target = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "test"));
        if message["reason"] == "compiler-artifact"
            && is_test_target
            && let Some(path) = message["executable"].as_str()
        {
            binaries.push(PathBuf::from(path));
        }
    }
    binaries.sort();
    if binaries.is_empty() {
        bail!("cargo built no integration test binaries");
    }
    Ok(binaries)
}

/// The suite that needs the real cluster (host kernel only).
const CLUSTER_SUITE: &str = "cluster";

fn run_host(
    binaries: &[PathBuf],
    environment: &[(&str, PathBuf)],
) -> anyhow::Result<matrix::Outcome> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mut suites = Vec::new();
    for binary in binaries {
        let name = matrix::suite_name(binary).to_owned();
        println!("---- kernel host ({release}): {name} ----");
        let started = std::time::Instant::now();
        let status = Command::new(binary)
            .envs(environment.iter().map(|(k, v)| (k, v)))
            .current_dir(shell::root())
            .status()
            .with_context(|| format!("running {}", binary.display()))?;
        suites.push((name, status.success(), started.elapsed().as_secs_f64()));
    }
    Ok(matrix::Outcome {
        kernel: "host",
        release,
        suites,
    })
}

fn summarize(outcomes: &[matrix::Outcome]) -> anyhow::Result<()> {
    println!("\n== real-kernel tests ==");
    let mut failed = Vec::new();
    for outcome in outcomes {
        for (suite, passed, seconds) in &outcome.suites {
            println!(
                "{:<5} {:<28} {:<12} {}   {seconds:.0} s",
                outcome.kernel,
                outcome.release,
                suite,
                if *passed { "ok" } else { "FAILED" }
            );
            if !passed {
                failed.push(format!(
                    "{suite} on kernel {} ({})",
                    outcome.kernel, outcome.release
                ));
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("failed: {}", failed.join(", "))
    }
}
