//! `docs/benchmarks.md` from one run: every figure, the noise, and the goals met or missed.

use std::{fmt::Write as _, process::Command};

use super::goals;
use super::{
    control::{self, ControlResult},
    datapath::{DatapathResult, Mechanism, PROGRAM_SCALES, ProgramRow, SCALES, TPS_CONNECTIONS},
    dns::{self, DnsResult},
    median, percentile,
};
use crate::shell;

/// Everything one run measured.
pub(crate) struct Results {
    pub(crate) datapath: DatapathResult,
    pub(crate) dns: DnsResult,
    pub(crate) control: ControlResult,
}

fn scale_name(scale: usize) -> String {
    match scale {
        1_000_000 => "1M".to_owned(),
        n if n >= 1_000 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// The spread of a list: (max − min) / median.
fn spread(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::NAN, f64::max);
    let min = values.iter().copied().fold(f64::NAN, f64::min);
    (max - min) / median(values)
}

/// Renders the report.
pub(crate) fn render(results: &Results) -> anyhow::Result<String> {
    let mut text = header()?;
    connection_section(&mut text, &results.datapath);
    program_section(&mut text, &results.datapath);
    dns_section(&mut text, &results.dns);
    control_section(&mut text, &results.control);
    goals::section(&mut text, results);
    Ok(text)
}

fn header() -> anyhow::Result<String> {
    let kernel = shell::output(Command::new("uname").arg("-r"))?
        .trim()
        .to_owned();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mut text = String::from("# Benchmarks\n\n");
    let _ = writeln!(
        text,
        "Produced by `cargo xtask bench` (as root): one run, every figure from it, ratios to the same\nrun's direct case. Machine: {cores} cores, {cpu}, kernel {kernel}. Everything runs in a private\nnetwork namespace on loopback; clients run in cgroups at a pod's depth (the selected entry on a\nlevel-3 cgroup, the process in its level-4 child; the cases without a hook in a level-4 cgroup\noutside the attach point). `kernel.bpf_stats_enabled` is off except in the samples that read\nthe programs' own cost: its two clock reads per program run would otherwise be timed too.\n"
    );
    Ok(text)
}

pub(crate) fn connection_section(text: &mut String, d: &DatapathResult) {
    let direct = d.direct();
    let _ = writeln!(text, "## Connection cost, side by side\n");
    let _ = writeln!(
        text,
        "Sequential connect/accept/close cycles by one client (the server closes first, without TIME_WAIT); the\nserver and the client are pinned to CPUs of their own. Each sample lasts about 1.5 s, each cell\nis the median of its rounds: µs per connection, and in parentheses the ratio to a direct\nconnection ({direct:.1} µs). nftables: {}; haproxy: {}.\n",
        d.nft, d.haproxy
    );
    let _ = write!(text, "| mechanism |");
    for scale in SCALES {
        let _ = write!(text, " {} |", scale_name(scale));
    }
    let _ = writeln!(text, "\n|---|{}", "---:|".repeat(SCALES.len()));
    for mechanism in [
        Mechanism::Direct,
        Mechanism::HookUnselectedMiss,
        Mechanism::HookMiss,
        Mechanism::HookRedirect,
        Mechanism::NftMap,
        Mechanism::IptablesNft,
        Mechanism::IptablesLegacy,
        Mechanism::Sidecar,
    ] {
        let _ = write!(text, "| {} |", mechanism.name());
        for scale in SCALES {
            match d.micros(mechanism, scale) {
                Some(us) => {
                    let _ = write!(text, " {us:.1} ({:.2}) |", us / direct);
                }
                None => text.push_str(" – |"),
            }
        }
        text.push('\n');
    }
    let direct_rounds = d.rounds(Mechanism::Direct);
    let _ = writeln!(
        text,
        "\nThe sidecar's cost does not depend on the number of destinations (one REDIRECT rule; the\nproxy picks the upstream), so it is measured once. At a million, each peer's rules were\ninstalled once (about a minute each) and its rounds ran back to back, with a round of the\ndirect and hook cases after each peer, once the machine was idle again (removing a million\nrules keeps the kernel busy for a while). The agent runs with its defaults (a resync every\n10 s).{idle} **Noise:** the direct case's {} samples spread over\n{:.0}% of their median; rows closer than that to each other are a tie.\n",
        direct_rounds.len(),
        spread(&direct_rounds) * 100.0,
        idle = d.idle_at_a_million.map_or_else(String::new, |idle| format!(
            " Idle with a million routes, after that scale's samples, it used {:.2}% of a core over\n30 s and held {:.0} MiB.",
            idle.cpu * 100.0,
            idle.rss_mib
        )),
    );
    let _ = writeln!(
        text,
        "![cost per connection against the number of rules](benchmarks.svg)\n"
    );
    let _ = writeln!(
        text,
        "### Transactions per second (1 KiB request, 1 KiB response)\n\nOn one connection the rate is bound by the round trip; on {} at once, by the CPU (two\ncores for the clients, the server and, for the sidecar, haproxy with two threads).\n",
        TPS_CONNECTIONS[1]
    );
    let _ = write!(text, "| path |");
    for connections in TPS_CONNECTIONS {
        let _ = write!(
            text,
            " {connections} connection(s): transactions/s (ratio to direct) |"
        );
    }
    let _ = writeln!(text, "\n|---|{}", "---:|".repeat(TPS_CONNECTIONS.len()));
    for mechanism in [
        Mechanism::Direct,
        Mechanism::HookRedirect,
        Mechanism::Sidecar,
    ] {
        let _ = write!(text, "| {} |", mechanism.name());
        for connections in TPS_CONNECTIONS {
            let rate = d.tps(mechanism, connections);
            let ratio = rate / d.tps(Mechanism::Direct, connections);
            let _ = write!(text, " {rate:.0} ({ratio:.2}) |");
        }
        text.push('\n');
    }
    text.push('\n');
}

pub(crate) fn program_section(text: &mut String, d: &DatapathResult) {
    let _ = writeln!(
        text,
        "## Program cost (`kernel.bpf_stats_enabled`: run time / runs)\n\nEach cell is connect4's ns per call and, in parentheses, the part above the floor. The floor is\na bare program (`r0 = 1; exit`) attached next to the agent's and timed in the same calls:\nthe hook's dispatch and `bpf_stats`' own two clock reads. These samples (5000 connections\nafter each timed sample of a hooked case) are the only ones with the statistics on.\n"
    );
    let _ = write!(text, "| path |");
    for routes in PROGRAM_SCALES {
        let _ = write!(text, " {} routes |", scale_name(routes));
    }
    let _ = writeln!(text, "\n|---|{}", "---:|".repeat(PROGRAM_SCALES.len()));
    for path in PROGRAM_PATHS {
        let _ = write!(text, "| {} |", path.name());
        for routes in PROGRAM_SCALES {
            let (nanos, above) = program_ns(d, path, routes);
            let _ = write!(text, " {nanos:.0} ({above:.0}) |");
        }
        text.push('\n');
    }
    let _ = write!(text, "| the floor: bare program |");
    for routes in PROGRAM_SCALES {
        let _ = write!(
            text,
            " {:.0} |",
            program_median(d, |r| r.routes == routes, |r| &r.floor)
        );
    }
    let selected =
        |r: &&ProgramRow| matches!(r.path, Mechanism::HookMiss | Mechanism::HookRedirect);
    let _ = writeln!(
        text,
        "\n\n`socket()` runs `sock_create` too: for a selected task it creates the socket's storage\n(the decision, the reverse translation, DNS query ids), {:.0} ns per call; for any other task\nit only reads the task's cached decision, {:.0} ns per call (medians over the samples above).\n\nWhere the time goes: every connect first looks the destination up in the global address map\nand, by a marker, in the learned map; with neither (and no static prefix holding it) it passes\nwithout asking who connects. A routed destination adds the decision (the socket's storage, else\nthe task's cached one) and, for a selected task, the learned entry under its scope and the\ntarget keyed by (class, set, protocol, port); a redirect adds the reverse-translation slot in\nthe socket's storage and two per-CPU counters. Nothing grows with the number of routes but\nthe hash lookups, which are O(1); at a million routes their buckets are less often cached.\n",
        program_median(d, |r| selected(&r), |r| &r.socket),
        program_median(d, |r| !selected(&r), |r| &r.socket),
    );
}

/// The paths of the program-cost table.
const PROGRAM_PATHS: [Mechanism; 4] = [
    Mechanism::HookUnselectedMiss,
    Mechanism::HookMiss,
    Mechanism::HookUnselected,
    Mechanism::HookRedirect,
];

/// connect4's median ns per call on `path` at `routes`, and the median of the same samples'
/// cost above the floor.
pub(super) fn program_ns(d: &DatapathResult, path: Mechanism, routes: usize) -> (f64, f64) {
    let row = d
        .program
        .iter()
        .find(|r| r.path == path && r.routes == routes);
    row.map_or((f64::NAN, f64::NAN), |r| {
        let above: Vec<f64> = r.nanos.iter().zip(&r.floor).map(|(n, f)| n - f).collect();
        (median(&r.nanos), median(&above))
    })
}

/// The median of one measure over the rows `keep` picks.
pub(super) fn program_median(
    d: &DatapathResult,
    keep: impl Fn(&ProgramRow) -> bool,
    measure: impl Fn(&ProgramRow) -> &Vec<f64>,
) -> f64 {
    let values: Vec<f64> = d
        .program
        .iter()
        .filter(|r| keep(r))
        .flat_map(|r| measure(r).iter().copied())
        .filter(|v| v.is_finite())
        .collect();
    median(&values)
}

pub(crate) fn dns_section(text: &mut String, r: &DnsResult) {
    let _ = writeln!(text, "## DNS\n");
    let _ = writeln!(
        text,
        "**The agent's own resolution**: {} hostnames with TTLs spread over 1–300 s (plus one with a\n1 s TTL whose answer changes), from dnsmasq; the agent sampled for {} s once all were routed.\n",
        dns::HOSTS,
        dns::STEADY.as_secs()
    );
    let _ = writeln!(text, "| measure | value |\n|---|---:|");
    let _ = writeln!(
        text,
        "| agent CPU (share of one core) | {:.2}% |",
        r.cpu_share * 100.0
    );
    let _ = writeln!(text, "| agent RSS | {:.1} MiB |", r.rss_mib);
    let _ = writeln!(
        text,
        "| queries per second (A and AAAA) | {:.1} |",
        r.queries_per_sec
    );
    let _ = writeln!(
        text,
        "| answer change → routes, median / p90 / max ({} changes, TTL 1 s) | {:.0} / {:.0} / {:.0} ms |",
        dns::CHANGES,
        median(&r.change_ms),
        percentile(&r.change_ms, 0.9),
        percentile(&r.change_ms, 1.0)
    );
    let (gateway, direct, failed) = r.connect_after_answer;
    let _ = writeln!(
        text,
        "\n**Learning from answers, in the kernel**: a wildcard rule (`*.cdn.test`, never resolved by\nthe agent) and a server rotating 4 of 40 addresses per answer (TTL 1 s). A client in the\nselected cgroup sends a query, and the moment `recvfrom` returns connects to the answer's first\naddress, {} times.\n",
        dns::ROUNDS
    );
    let _ = writeln!(text, "| measure | value |\n|---|---:|");
    let _ = writeln!(
        text,
        "| connections through the gateway / direct / failed | {gateway} / {direct} / {failed} |"
    );
    let _ = writeln!(
        text,
        "| `dns_ingress` (with its tail calls) per answer | {:.0} ns |",
        r.ns_per_answer
    );
    let _ = writeln!(
        text,
        "| `dns_ingress` + `dns_egress` per other packet (bulk TCP) | {:.0} ns |",
        r.ns_per_packet
    );
    let _ = writeln!(
        text,
        "| time in those programs ÷ the transfer's time (bulk TCP) | {:.2}% |",
        r.bulk_program_share * 100.0
    );
    let _ = writeln!(
        text,
        "| bulk TCP throughput with the programs ÷ without, median of {} paired rounds (spread of the pairs) | {:.3} ({:.3}–{:.3}) |\n",
        r.bulk.0.len(),
        r.bulk_ratio(),
        percentile(&r.bulk_ratios(), 0.0),
        percentile(&r.bulk_ratios(), 1.0),
    );
}

pub(crate) fn control_section(text: &mut String, c: &ControlResult) {
    let _ = writeln!(text, "## Control plane (Kubernetes mode)\n");
    let _ = writeln!(
        text,
        "On the real Kubernetes {} of the `cluster` suite (etcd, kube-apiserver,\nkube-controller-manager, kube-proxy, CoreDNS), with the agent installed as the README says\n(its DaemonSet, ServiceAccount and RBAC). The API server holds {} namespaces and {}\nServices with their EndpointSlices (none a gateway's); {} pods run on this node. The\nbenchmark plays the kubelet for its pods: the pod is created in the API, then its cgroup\nappears, then its status says Running. Requests are the agent's, from the API server's\naudit log.\n",
        crate::cluster::KUBERNETES_VERSION,
        control::NAMESPACES,
        control::SERVICES,
        control::NODE_PODS,
    );
    let _ = writeln!(text, "| measure | value |\n|---|---:|");
    let _ = writeln!(
        text,
        "| agent RSS, after the churn | {:.1} MiB |",
        c.rss_mib
    );
    let _ = writeln!(
        text,
        "| agent CPU, idle | {:.2}% of a core |",
        c.idle_cpu * 100.0
    );
    let _ = writeln!(
        text,
        "| API requests from the agent, idle | {:.1} a minute |",
        c.idle_requests_per_min
    );
    let _ = writeln!(
        text,
        "| agent CPU, {:.1} pods created and {:.1} deleted a second | {:.2}% of a core |",
        c.churn_pods_per_sec,
        c.churn_pods_per_sec,
        c.churn_cpu * 100.0
    );
    let _ = writeln!(
        text,
        "| API requests from the agent, under that churn | {:.1} a minute |",
        c.churn_requests_per_min
    );
    let rows = [
        ("policy change sent → maps", "changes", &c.policy_ms),
        (
            "pod create sent → cgroups map, one at a time",
            "pods",
            &c.pod_ms,
        ),
        (
            "pod create sent → cgroups map, under churn",
            "pods",
            &c.churn_pod_ms,
        ),
        (
            "pod stopped → entry removed, under churn",
            "pods",
            &c.churn_gone_ms,
        ),
    ];
    for (what, unit, ms) in rows {
        let _ = writeln!(
            text,
            "| {what}, p50 / p99 ({} {unit}) | {:.1} / {:.1} ms |",
            ms.len(),
            median(ms),
            percentile(ms, 0.99)
        );
    }
    text.push('\n');
}
