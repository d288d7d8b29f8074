//! The goals of the benchmark issue, judged from one run, and for each missed one why and
//! what would close the gap, in figures from the same run.

use std::fmt::Write as _;

use super::{
    control::ControlResult,
    datapath::{DatapathResult, Mechanism, SCALES, TPS_CONNECTIONS},
    dns, percentile,
    report::{Results, program_median, program_ns},
};

/// One goal: what, the target, the measured value, whether met, and (when missed) why.
struct Goal {
    what: &'static str,
    target: &'static str,
    measured: String,
    met: bool,
    gap: String,
}

/// Where a redirected connection's extra time goes, from the same run's rows pooled over every
/// scale (the hook cases do not depend on it, and one scale's three to five rounds are too few
/// to split a few µs): the hooks merely attached, a selected task's socket (its storage), the
/// redirect itself.
fn overhead_gap(d: &DatapathResult) -> String {
    let direct = d.pooled(Mechanism::Direct);
    let unselected = d.pooled(Mechanism::HookUnselectedMiss);
    let selected = d.pooled(Mechanism::HookMiss);
    let redirect = d.pooled(Mechanism::HookRedirect);
    let share = |us: f64| us / direct * 100.0;
    format!(
        "Pooled over every scale's rounds, a redirected connection took {:.1} µs more than a direct one (medians; parts smaller than the noise are ties): {:.1} µs ({:.1}%) with the hooks merely attached (an unselected task, an unrouted destination: the socket, connect and packet programs' dispatch), {:.1} µs ({:.1}%) for a selected task's socket (its storage, created at socket() and freed at close), and {:.1} µs ({:.1}%) for the redirect itself. The storage is what a redirected socket cannot do without: it holds the reverse translation and the decision, is charged to the socket and is never evicted; creating it at connect instead moves the cost, it does not remove it. A shared table keyed by socket cookie would cost less, but one pod could fill it for every other pod and a translation could be lost. The packet programs are what learning from DNS answers costs.",
        redirect - direct,
        unselected - direct,
        share(unselected - direct),
        selected - unselected,
        share(selected - unselected),
        redirect - selected,
        share(redirect - selected),
    )
}

/// Why nftables' DNAT at 10k is not 1.2× the redirect, from the same run's rows.
fn nft_gap(d: &DatapathResult) -> String {
    let at = |m: Mechanism| d.micros(m, 10_000).unwrap_or(f64::NAN);
    let (direct, nft, redirect) = (
        at(Mechanism::Direct),
        at(Mechanism::NftMap),
        at(Mechanism::HookRedirect),
    );
    let allowed = nft / 1.2;
    let why = if allowed < direct {
        "less than a direct connection: on loopback, conntrack's and NAT's per-connection work is too small a share of a connection for any mechanism to reach it. It would take a setting where conntrack and NAT cost more than a fifth of a direct connection; this machine, with loopback only, has none to measure.".to_owned()
    } else {
        format!(
            "{:.1} µs above a direct one, while a redirected connection took {:.1} µs above it (where that goes: the goal above). On loopback, conntrack's and NAT's per-connection work is a small share of a connection, so the margin the goal leaves is smaller than what any hook costs.",
            allowed - direct,
            redirect - direct,
        )
    };
    format!(
        "nftables' DNAT cost {nft:.1} µs per connection, {:.2}× a direct one ({direct:.1} µs). For 1.2, a redirected connection would have to take at most {allowed:.1} µs, {why}",
        nft / direct,
    )
}

fn goals(r: &Results) -> Vec<Goal> {
    let d = &r.datapath;
    let (redirect_ns, redirect_above) = program_ns(d, Mechanism::HookRedirect, 1_000_000);
    let (miss_ns, miss_above) = program_ns(d, Mechanism::HookMiss, 1_000_000);
    let floor = program_median(d, |r| r.routes == 1_000_000, |r| &r.floor);
    let worst_flat = SCALES
        .iter()
        .map(|s| d.paired_ratio(Mechanism::Direct, Mechanism::HookRedirect, *s))
        .fold(f64::NAN, f64::min);
    let nft = d.paired_ratio(Mechanism::NftMap, Mechanism::HookRedirect, 10_000);
    let busy = TPS_CONNECTIONS[1];
    let proxy = d.tps(Mechanism::HookRedirect, busy) / d.tps(Mechanism::Sidecar, busy);
    let proxy_one = d.tps(Mechanism::HookRedirect, 1) / d.tps(Mechanism::Sidecar, 1);
    let bulk = r.dns.bulk_ratio();
    vec![
        Goal {
            what: "redirect, per call, pod depth, 1M routes",
            target: "≤ 300 ns",
            measured: format!("{redirect_ns:.0} ns"),
            met: redirect_ns <= 300.0,
            gap: format!(
                "{floor:.0} ns of it is the floor (the bare program in the same calls); {redirect_above:.0} ns is the agent's: the two destination lookups, the socket's storage (the first read of a socket's storage takes its lock to fill the storage cache), the target lookup, the reverse slot and the counters. Fewer would need one map for global and learned addresses, which the kernel writes to and the agent diffs, or counters the agent sums from the sockets."
            ),
        },
        Goal {
            what: "miss, per call, 1M routes",
            target: "≤ 150 ns",
            measured: format!("{miss_ns:.0} ns"),
            met: miss_ns <= 150.0,
            gap: format!(
                "{floor:.0} ns of it is the floor; {miss_above:.0} ns is the agent's: two hash lookups (the global address and the learned marker), with 16- and 24-byte keys. One lookup would need the kernel and the agent to write one map."
            ),
        },
        Goal {
            what: "direct ÷ redirect connection cost, worst of 1, 10k, 1M routes (median of paired rounds)",
            target: "≥ 0.97",
            measured: format!("{worst_flat:.2}"),
            met: worst_flat >= 0.97,
            gap: overhead_gap(d),
        },
        Goal {
            what: "nftables map DNAT ÷ hook redirect, 10k elements (median of paired rounds)",
            target: "≥ 1.2",
            measured: format!("{nft:.2}"),
            met: nft >= 1.2,
            gap: nft_gap(d),
        },
        Goal {
            what: "transactions, hook redirect ÷ sidecar proxy, CPU-bound (one connection)",
            target: "≥ 2",
            measured: format!("{proxy:.2} ({proxy_one:.2})"),
            met: proxy >= 2.0,
            gap: "The proxy's extra hop is two more socket passes per transaction; on this 2-core machine the client, the server and haproxy share the cores.".to_owned(),
        },
        Goal {
            what: "connect right after the answer, direct",
            target: "0",
            measured: format!("{} of {}", r.dns.connect_after_answer.1, dns::ROUNDS),
            met: r.dns.connect_after_answer.1 == 0,
            gap: "An answer the program could not parse is counted as unparsed; see maps stats.".to_owned(),
        },
        Goal {
            what: "bulk TCP throughput with the learning programs ÷ without: 1 − the programs' share of the transfer's time (paired throughput rounds, median)",
            target: "≥ 0.99",
            measured: format!("{:.4} ({bulk:.3})", 1.0 - r.dns.bulk_program_share),
            met: 1.0 - r.dns.bulk_program_share >= 0.99,
            gap: "A packet of a socket connected to a port that is not a DNS port leaves at the first check; what is left per packet is the programs' dispatch and bpf_stats' own clock reads.".to_owned(),
        },
    ]
    .into_iter()
    .chain(control_goals(&r.control))
    .collect()
}

/// The control plane's goals.
fn control_goals(c: &ControlResult) -> Vec<Goal> {
    let pod_p99 = percentile(&c.churn_pod_ms, 0.99);
    let policy_p99 = percentile(&c.policy_ms, 0.99);
    vec![
        Goal {
            what: "pod create sent → cgroups map, p99, under churn of 20 pods a second, on the real API server",
            target: "≤ 100 ms",
            measured: format!("{pod_p99:.1} ms"),
            met: pod_p99 <= 100.0,
            gap: "A pod's first process cannot start before the kubelet has seen the pod and built its sandbox and network (hundreds of ms with containerd and a CNI); the benchmark makes the cgroup right after the create. What is left is the watch's delivery and, per cgroup event, a walk of the kubelet's directories (one readdir each).".to_owned(),
        },
        Goal {
            what: "API requests a minute from the idle agent that holds the status Lease (others: 2)",
            target: "≤ 15",
            measured: format!("{:.1}", c.idle_requests_per_min),
            met: c.idle_requests_per_min <= 15.0,
            gap: "The Lease's renewal, one update every 5 s; watches are long requests that the server ends every few minutes.".to_owned(),
        },
        Goal {
            what: "idle agent CPU",
            target: "< 0.5% of a core",
            measured: format!("{:.2}%", c.idle_cpu * 100.0),
            met: c.idle_cpu < 0.005,
            gap: "Every 10 s the resync walks the kubelet's cgroup directories and expires learned addresses (with nothing changed it computes nothing); a longer --resync-interval trades that for slower recovery from missed events.".to_owned(),
        },
        Goal {
            what: "agent RSS, 10k Services, 10k namespaces, 110 pods",
            target: "≤ 64 MiB",
            measured: format!("{:.1} MiB", c.rss_mib),
            met: c.rss_mib <= 64.0,
            gap: "Namespaces are the only cluster-wide watch left; keeping only the namespaces of local pods (and those policies' selectors name) would cut it further.".to_owned(),
        },
        Goal {
            what: "policy change → maps, p99",
            target: "≤ 100 ms",
            measured: format!("{policy_p99:.1} ms"),
            met: policy_p99 <= 100.0,
            gap: "The whole index is recomputed on each change; computing only the changed policy's rules would bound it.".to_owned(),
        },
    ]
}

/// The goals table, and for each missed goal why.
pub(super) fn section(text: &mut String, results: &Results) {
    let goals = goals(results);
    let _ = writeln!(text, "## Goals\n");
    let _ = writeln!(
        text,
        "| goal | target | measured | met |\n|---|---:|---:|:---:|"
    );
    for goal in &goals {
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} |",
            goal.what,
            goal.target,
            goal.measured,
            if goal.met { "yes" } else { "**no**" }
        );
    }
    let missed: Vec<&Goal> = goals.iter().filter(|g| !g.met).collect();
    if !missed.is_empty() {
        text.push_str("\nWhere a goal was missed, why, and what would close the gap:\n\n");
        for goal in missed {
            let _ = writeln!(
                text,
                "* **{}** ({}): {}",
                goal.what, goal.measured, goal.gap
            );
        }
    }
}
