//! Harness for the real-kernel integration tests.
//!
//! Every test builds its own world: a cgroup subtree under the real cgroup2 mount (where its
//! agent attaches, so tests running in parallel never see each other's programs), its own bpffs
//! pin directory, loopback servers on ephemeral ports, and client processes (`egress-probe`)
//! started inside child cgroups. Nothing leaves loopback.
//!
//! These tests need root, BPF and cgroup2. Without them they **fail**, unless
//! `EGRESS_SKIP_KERNEL_TESTS=1` is set by hand.

pub mod agent;
pub mod bpf;
pub mod cgroup;
pub mod cluster;
pub mod dns;
pub mod kube;
pub mod net;
pub mod realcluster;
pub mod resolvers;
pub mod world;

pub use agent::Agent;
pub use cgroup::TestCgroup;
pub use dns::DnsServer;
pub use net::{Probe, Server};
pub use world::World;

/// Whether the kernel tests should run. Panics with the reason when the machine cannot run them
/// and nobody asked to skip them.
pub fn kernel_tests_enabled() -> bool {
    if std::env::var("EGRESS_SKIP_KERNEL_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("EGRESS_SKIP_KERNEL_TESTS=1: skipping a real-kernel test");
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "the kernel tests need root (set EGRESS_SKIP_KERNEL_TESTS=1 to skip them by hand)"
    );
    assert!(
        cgroup::cgroup2_mount().is_some(),
        "no cgroup2 mount in /proc/self/mountinfo (set EGRESS_SKIP_KERNEL_TESTS=1 to skip by hand)"
    );
    true
}

/// `base` stretched for slow machines: the kernel matrix runs these tests in emulated VMs and
/// sets `EGRESS_TEST_TIME_SCALE` (default 1). Only waits and upper bounds are stretched, never
/// what a test asserts must take at least some time.
pub fn scaled(base: std::time::Duration) -> std::time::Duration {
    base * time_scale()
}

/// `EGRESS_TEST_TIME_SCALE` (at least 1): how much slower than the host the tests run here.
pub fn time_scale() -> u32 {
    std::env::var("EGRESS_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1)
}

/// `duration` as a duration setting of the agent's config (`dns.grace` etc.), in
/// milliseconds so that a [`scaled`] value is written exactly.
pub fn config_duration(duration: std::time::Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// A name unique to this process and call, for cgroups and pin directories.
pub fn unique(label: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "egress-test-{}-{}-{label}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A binary of the workspace next to the test executable (`target/<profile>/NAME`); `cargo`
/// builds `egress-probe` for the tests, and `cargo xtask test` builds `egress-agent` first.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let var = format!("CARGO_BIN_EXE_{name}");
    if let Some(path) = std::env::var_os(var) {
        return path.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("test binary in target/<profile>/deps");
    dir.join(name)
}

/// The workspace's root directory (where `deploy/` is).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_owned()
}
