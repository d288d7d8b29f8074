//! `cargo xtask bench`: what the agent costs, side by side with the other ways of doing this,
//! as ratios from one run. Writes `docs/benchmarks.md` and `docs/benchmarks.svg`.
//!
//! Everything runs in a private network namespace (loopback only) with the processes under test
//! in cgroups at a pod's depth:
//!
//! * [`datapath`]: the cost of a connection (direct, hook miss, hook redirect, nftables map
//!   DNAT, iptables-nft and iptables-legacy DNAT, a sidecar-style REDIRECT to haproxy) at 1,
//!   10,000 and 1,000,000 routes, rules or elements, interleaved rounds; the proxy's and the
//!   redirect's transactions per second; and the connect4 program's own cost by `bpf_stats`;
//! * [`dns`]: the agent's DNS engine, learning from answers (connect right after `recvmsg`,
//!   program cost per answer and per other packet, bulk throughput);
//! * [`control`]: on the real cluster of the `cluster` suite with 10,000 namespaces and
//!   Services: pod → map, policy → maps, agent CPU, RSS and API requests, idle and under churn.

mod control;
mod datapath;
mod dns;
mod env;
mod floor;
mod goals;
mod peers;
mod plot;
mod report;

use anyhow::Context as _;

use crate::shell::{self, root};

/// A part of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Part {
    /// Connection cost, side by side with the peers, and the programs' own cost.
    Datapath,
    /// DNS learning.
    Dns,
    /// The control plane on the real cluster.
    Control,
}

/// Runs every part and writes the report; with `parts`, runs only those and prints them.
pub(crate) fn run(parts: &[Part]) -> anyhow::Result<()> {
    shell::release_binaries("the benchmark attaches eBPF programs and changes nftables")?;
    // Built (or found) while the network is still there.
    let cluster = crate::cluster::build()?;
    env::enter_private_netns()?;
    if !parts.is_empty() {
        return run_parts(parts, cluster);
    }
    let datapath = datapath::run()?;
    let dns = dns::run()?;
    let control = control::run(cluster)?;
    let results = report::Results {
        datapath,
        dns,
        control,
    };
    let markdown = report::render(&results)?;
    print!("{markdown}");
    let docs = root().join("docs");
    plot::draw(&results.datapath, &docs.join("benchmarks.svg"))?;
    let path = docs.join("benchmarks.md");
    std::fs::write(&path, markdown).with_context(|| format!("writing {}", path.display()))?;
    println!("bench: wrote {} and docs/benchmarks.svg", path.display());
    Ok(())
}

fn run_parts(parts: &[Part], cluster: crate::cluster::Built) -> anyhow::Result<()> {
    let mut text = String::new();
    let mut cluster = Some(cluster);
    for part in parts {
        match part {
            Part::Datapath => {
                let d = datapath::run()?;
                report::connection_section(&mut text, &d);
                report::program_section(&mut text, &d);
            }
            Part::Dns => report::dns_section(&mut text, &dns::run()?),
            Part::Control => {
                let built = cluster.take().context("the control part runs once")?;
                report::control_section(&mut text, &control::run(built)?);
            }
        }
    }
    print!("{text}");
    Ok(())
}

/// The median of `values` (NaN when empty).
pub(crate) fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

/// The `p` quantile of `values`, nearest rank (NaN when empty).
pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short list"
    )]
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
