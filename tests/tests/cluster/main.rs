//! The `cluster` suite: the agent on a real Kubernetes (see `egress_tests::realcluster`),
//! installed exactly as the README's "Deploy on Kubernetes" says, on the host's kernel. Each
//! case counts the connections that reached an external origin from anywhere but the gateway
//! pod: the direct ones, which must be 0.
//!
//! One cluster serves every case, in order (a custom harness: `harness = false`); the summary
//! line is `N passed, N failed`.
#![expect(clippy::print_stdout, reason = "the suite's own harness reports")]

mod cases;
mod lifecycle;

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    time::Instant,
};

use egress_tests::{kernel_tests_enabled, realcluster::install::Installed};

/// Everything a case uses.
pub(crate) type Suite = Installed;

fn main() {
    if !kernel_tests_enabled() {
        return;
    }
    let started = Instant::now();
    let suite = Suite::install();
    println!(
        "cluster: set up in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let mut passed = 0;
    let mut failed = Vec::new();
    for (name, case) in cases::CASES {
        suite.peers.clear();
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| case(&suite)));
        let seconds = started.elapsed().as_secs_f64();
        if outcome.is_ok() {
            println!("test {name} ... ok ({seconds:.1} s)");
            passed += 1;
        } else {
            println!("test {name} ... FAILED ({seconds:.1} s)");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        println!("\n{}", suite.cluster.log_tails());
        println!("failures: {}", failed.join(", "));
    }
    println!("{passed} passed, {} failed", failed.len());
    drop(suite);
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
