//! `cargo xtask`: setup, test, demo, bench. Everything a fresh machine needs is installed by
//! `setup`, which the other commands run first; every step is idempotent.
#![expect(clippy::print_stdout, reason = "xtask talks to the terminal")]

mod bench;
mod cluster;
mod demo;
mod matrix;
mod setup;
mod shell;
mod test;

use clap::{Parser, Subcommand};

/// Project automation.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the eBPF toolchain (nightly rust-src, bpf-linker) and the test packages.
    Setup,
    /// fmt, clippy, unit tests and the real-kernel integration tests (as root) on the host's
    /// kernel and on Debian's 5.10, 6.1 and 6.12 in VMs.
    Test {
        /// Run the integration tests only on these kernels: host, 5.10, 6.1, 6.12 or all
        /// (repeatable; default all).
        #[arg(long = "kernel")]
        kernels: Vec<String>,
        /// Run only these integration suites: `cluster` (host kernel only), `control_plane`,
        /// `datapath`, `dns`, `hardening`, `kubernetes`, `learning`, `lifecycle` (repeatable;
        /// default all).
        #[arg(long = "suite")]
        suites: Vec<String>,
    },
    /// Run the main job on a local sandbox: a client redirected to a gateway, one not.
    Demo,
    /// Measure the agent side by side with nftables, iptables and a sidecar proxy, the
    /// programs' own cost, DNS learning and the control plane; writes docs/benchmarks.md and
    /// docs/benchmarks.svg.
    Bench {
        /// Run only these parts and print their sections, without writing the docs:
        /// `datapath`, `dns` or `control` (repeatable; default all).
        #[arg(long = "part")]
        parts: Vec<bench::Part>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Test { kernels, suites } => test::run(&kernels, &suites),
        Command::Demo => demo::run(),
        Command::Bench { parts } => bench::run(&parts),
    }
}
