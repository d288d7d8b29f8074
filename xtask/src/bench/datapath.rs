//! Connection cost side by side with the peers, the connect4 program's own cost, and
//! transactions per second through the redirect and through a sidecar proxy.
//!
//! A sample is one client process making sequential connect/accept/close cycles for about
//! [`SAMPLE`] (the count is calibrated per case, so a million-rule iptables chain gets as fair
//! a sample as a direct connection). At 1 and 10,000 rules every case runs once per round and
//! rounds are interleaved; at a million, installing an nftables map or an iptables chain takes
//! about a minute, so each peer is installed once and its rounds run back to back between
//! rounds of the direct and hook cases.

use std::{fmt::Write as _, time::Duration};

use anyhow::Context as _;

use super::{
    env::{self, Agent, BpfStats, PodTree},
    floor::BareConnect4,
    median,
    peers::{self, Iptables, ROUTED, Sidecar},
};

/// Rules, routes or elements per scale.
pub(crate) const SCALES: [usize; 3] = [1, 10_000, 1_000_000];
/// Routes for the program-cost table.
pub(crate) const PROGRAM_SCALES: [usize; 3] = [1, 100_000, 1_000_000];
/// Rounds at the small scales; at a million.
const ROUNDS: usize = 5;
const ROUNDS_AT_A_MILLION: usize = 3;
/// Wall time one sample aims at.
const SAMPLE: Duration = Duration::from_millis(1500);
/// Connections per program-cost sample (with `bpf_stats` on, apart from the timed samples).
const PROGRAM_SAMPLE: u32 = 5000;
/// Transactions-per-second runs.
const TPS_SECONDS: &str = "4";
const TPS_ROUNDS: usize = 3;
/// How long the idle agent is sampled at a million routes (three resyncs).
const IDLE_SAMPLE: Duration = Duration::from_secs(30);
/// Connections at once for the transactions: one (latency-bound), and enough to keep both
/// cores busy (CPU-bound, where a proxy's own work shows).
pub(crate) const TPS_CONNECTIONS: [usize; 2] = [1, 16];

/// Transactions per second of one path at one concurrency, one value per round.
pub(crate) struct Tps {
    pub(crate) mechanism: Mechanism,
    pub(crate) connections: usize,
    pub(crate) rates: Vec<f64>,
}

impl DatapathResult {
    /// The median, over rounds, of `a`'s cost ÷ `b`'s in the same round at `scale` (paired
    /// rounds ran next to each other, so drift over the run cancels).
    pub(crate) fn paired_ratio(&self, a: Mechanism, b: Mechanism, scale: usize) -> f64 {
        let samples = |m: Mechanism| {
            self.rows
                .iter()
                .find(|r| r.mechanism == m && r.scale == scale)
                .map(|r| r.micros.clone())
                .unwrap_or_default()
        };
        let ratios: Vec<f64> = samples(a)
            .iter()
            .zip(samples(b))
            .map(|(a, b)| a / b)
            .collect();
        median(&ratios)
    }

    /// The median transactions per second of `mechanism` on `connections` connections.
    pub(crate) fn tps(&self, mechanism: Mechanism, connections: usize) -> f64 {
        self.tps
            .iter()
            .find(|t| t.mechanism == mechanism && t.connections == connections)
            .map_or(f64::NAN, |t| median(&t.rates))
    }
}

/// A way of getting a connection to its destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Mechanism {
    #[default]
    Direct,
    HookMiss,
    HookUnselectedMiss,
    HookUnselected,
    HookRedirect,
    NftMap,
    IptablesNft,
    IptablesLegacy,
    Sidecar,
}

impl Mechanism {
    /// A name for tables and the plot.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct (no hook)",
            Self::HookMiss => "hook attached, destination not routed",
            Self::HookUnselectedMiss => "hook attached, task not selected, destination not routed",
            Self::HookUnselected => "hook attached, routed, task not selected",
            Self::HookRedirect => "hook redirect",
            Self::NftMap => "nftables map DNAT",
            Self::IptablesNft => "iptables-nft DNAT",
            Self::IptablesLegacy => "iptables-legacy DNAT",
            Self::Sidecar => "sidecar proxy (REDIRECT to haproxy)",
        }
    }
}

/// One mechanism at one scale: µs per connection, one value per round.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) mechanism: Mechanism,
    pub(crate) scale: usize,
    pub(crate) micros: Vec<f64>,
}

/// connect4's ns per call on one path at one number of routes, with what the bare program
/// ([`BareConnect4`]) and `sock_create` cost per call in the same samples; one value per
/// sample each.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProgramRow {
    pub(crate) path: Mechanism,
    pub(crate) routes: usize,
    pub(crate) nanos: Vec<f64>,
    pub(crate) floor: Vec<f64>,
    pub(crate) socket: Vec<f64>,
}

/// The agent idle with a million static routes (its defaults: a resync every 10 s).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Idle {
    /// Share of one core.
    pub(crate) cpu: f64,
    pub(crate) rss_mib: f64,
}

/// What this part measured.
pub(crate) struct DatapathResult {
    pub(crate) rows: Vec<Row>,
    pub(crate) program: Vec<ProgramRow>,
    /// Transactions per second: (direct, hook redirect, sidecar) × [`TPS_CONNECTIONS`]; one
    /// value per round.
    pub(crate) tps: Vec<Tps>,
    pub(crate) haproxy: String,
    pub(crate) nft: String,
    /// The agent idle at a million routes, after that scale's samples.
    pub(crate) idle_at_a_million: Option<Idle>,
}

impl DatapathResult {
    /// The median of a mechanism at a scale.
    pub(crate) fn micros(&self, mechanism: Mechanism, scale: usize) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.mechanism == mechanism && r.scale == scale)
            .map(|r| median(&r.micros))
    }

    /// Every round of `mechanism`, at every scale.
    pub(crate) fn rounds(&self, mechanism: Mechanism) -> Vec<f64> {
        self.rows
            .iter()
            .filter(|r| r.mechanism == mechanism)
            .flat_map(|r| r.micros.iter().copied())
            .collect()
    }

    /// The median of every round of `mechanism`, at every scale.
    pub(crate) fn pooled(&self, mechanism: Mechanism) -> f64 {
        median(&self.rounds(mechanism))
    }

    /// The median direct connection over every scale's rounds.
    pub(crate) fn direct(&self) -> f64 {
        self.pooled(Mechanism::Direct)
    }
}

/// The agent's config with `routes` addresses for the routed destination's port.
fn config(tree: &PodTree, port: u16, routes: usize) -> String {
    let mut addresses = String::from(ROUTED);
    for i in 1..u32::try_from(routes).unwrap_or(u32::MAX) {
        let [_, b, c, d] = (0x7f80_0000_u32 + i).to_be_bytes();
        let _ = write!(addresses, ", 127.{b}.{c}.{d}");
    }
    format!(
        "attach: {root}\nrules:\n  - name: bench\n    gateway: 127.0.0.1\n    addresses: [{addresses}]\n    ports: [{{port: {port}}}]\nworkloads:\n  cgroups: [{pod}]\n",
        root = tree.root.path().display(),
        pod = tree.pod.path().display(),
    )
}

/// Runs this part.
pub(crate) fn run() -> anyhow::Result<DatapathResult> {
    let tree = PodTree::new("egress-bench");
    let port = env::closing_server()?;
    let echo = env::echo_server()?;
    // The agent's defaults: a resync every 10 s, which with nothing changed compares the
    // facts and computes nothing.
    let agent = Agent::start("egress-bench", &config(&tree, port, 1), &[])?;
    agent.wait_log("routes=1 ", Duration::from_mins(1))?;
    let stats = BpfStats::take()?;
    let bare = BareConnect4::attach(tree.root.path())?;
    let mut runner = Runner {
        tree: &tree,
        stats: &stats,
        port,
        programs: [
            agent.program_id("connect4")?,
            bare.id,
            agent.program_id("sock_create")?,
        ],
        counts: Vec::new(),
        result: DatapathResult {
            rows: Vec::new(),
            program: Vec::new(),
            tps: Vec::new(),
            idle_at_a_million: None,
            haproxy: Sidecar::version(),
            nft: crate::shell::output(std::process::Command::new("nft").arg("--version"))
                .unwrap_or_default()
                .trim()
                .to_owned(),
        },
    };
    let mut scales: Vec<usize> = SCALES.into_iter().chain(PROGRAM_SCALES).collect();
    scales.sort_unstable();
    scales.dedup();
    for scale in scales {
        if scale > 1 {
            agent.write_config(&config(&tree, port, scale))?;
            agent.wait_log(&format!("routes={scale} "), Duration::from_mins(5))?;
        }
        runner.scale(scale)?;
        if scale == 1_000_000 {
            env::settle()?;
            runner.result.idle_at_a_million = Some(Idle {
                cpu: env::cpu_share(agent.pid(), IDLE_SAMPLE)?,
                rss_mib: env::rss_mib(agent.pid())?,
            });
        }
    }
    // The transactions are to the echo server's port: route that one alone.
    agent.write_config(&config(&tree, echo, 1))?;
    agent.wait_log("routes=1 ", Duration::from_mins(5))?;
    drop(bare);
    let mut result = runner.result;
    result.tps = tps(&tree, echo)?;
    drop((stats, agent));
    Ok(result)
}

struct Runner<'a> {
    tree: &'a PodTree,
    stats: &'a BpfStats,
    port: u16,
    /// `connect4`, the bare program, `sock_create`.
    programs: [u64; 3],
    /// Calibrated connection counts per (mechanism, scale).
    counts: Vec<((Mechanism, usize), u32)>,
    result: DatapathResult,
}

impl Runner<'_> {
    fn scale(&mut self, scale: usize) -> anyhow::Result<()> {
        let hooks = [
            Mechanism::Direct,
            Mechanism::HookMiss,
            Mechanism::HookUnselectedMiss,
            Mechanism::HookUnselected,
            Mechanism::HookRedirect,
        ];
        let mut peers = vec![];
        if SCALES.contains(&scale) {
            peers.extend([
                Mechanism::NftMap,
                Mechanism::IptablesNft,
                Mechanism::IptablesLegacy,
            ]);
            if scale == 1 {
                peers.push(Mechanism::Sidecar);
            }
        }
        if scale >= 1_000_000 {
            // Each peer installed once; a round of the direct and hook cases after each, so
            // those spread over the same stretch of time.
            for mechanism in peers {
                let _installed = self.install(mechanism, scale)?;
                for _ in 0..ROUNDS_AT_A_MILLION {
                    self.sample(mechanism, scale)?;
                }
                peers::clear()?;
                env::settle()?;
                for hook in hooks {
                    self.sample(hook, scale)?;
                }
            }
            return Ok(());
        }
        for _ in 0..ROUNDS {
            for mechanism in hooks.iter().chain(&peers) {
                let _installed = self.install(*mechanism, scale)?;
                self.sample(*mechanism, scale)?;
                peers::clear()?;
            }
        }
        Ok(())
    }

    /// Installs a peer's rules; the sidecar lives as long as the guard.
    fn install(&self, mechanism: Mechanism, scale: usize) -> anyhow::Result<Option<Sidecar>> {
        match mechanism {
            Mechanism::NftMap => peers::nft_map(scale, self.port)?,
            Mechanism::IptablesNft => peers::iptables_dnat(Iptables::Nft, scale, self.port)?,
            Mechanism::IptablesLegacy => {
                peers::iptables_dnat(Iptables::Legacy, scale, self.port)?;
            }
            Mechanism::Sidecar => return Ok(Some(Sidecar::start(&[self.port])?)),
            _ => {}
        }
        Ok(None)
    }

    /// One sample: µs per connection; for a hooked case at a program-cost scale, then one
    /// program-cost sample.
    fn sample(&mut self, mechanism: Mechanism, scale: usize) -> anyhow::Result<()> {
        let tree = self.tree;
        let (cgroup, target) = match mechanism {
            Mechanism::Direct => (&tree.outside, format!("127.0.0.1:{}", self.port)),
            Mechanism::HookMiss => (&tree.selected, format!("127.0.0.1:{}", self.port)),
            Mechanism::HookUnselectedMiss => (&tree.unselected, format!("127.0.0.1:{}", self.port)),
            Mechanism::HookUnselected => (&tree.unselected, format!("{ROUTED}:{}", self.port)),
            Mechanism::HookRedirect => (&tree.selected, format!("{ROUTED}:{}", self.port)),
            _ => (&tree.outside, format!("{ROUTED}:{}", self.port)),
        };
        let count = self.count(mechanism, scale, cgroup, &target)?;
        let micros = env::crr(cgroup, &target, count)?;
        println!(
            "bench: {} at {scale}: {micros:.1} us/connection ({count} connections)",
            mechanism.name()
        );
        push_row(&mut self.result.rows, mechanism, scale, micros);
        let hooked = matches!(
            mechanism,
            Mechanism::HookMiss
                | Mechanism::HookUnselectedMiss
                | Mechanism::HookUnselected
                | Mechanism::HookRedirect
        );
        if hooked && PROGRAM_SCALES.contains(&scale) {
            self.program_sample(mechanism, scale, cgroup, &target)?;
        }
        Ok(())
    }

    /// connect4's, the bare program's and `sock_create`'s ns per call over
    /// [`PROGRAM_SAMPLE`] connections.
    fn program_sample(
        &mut self,
        mechanism: Mechanism,
        scale: usize,
        cgroup: &egress_tests::TestCgroup,
        target: &str,
    ) -> anyhow::Result<()> {
        let programs = self.programs;
        let read = |ids: [u64; 3]| ids.map(BpfStats::read);
        let (before, after) = self.stats.on(|| {
            let before = read(programs);
            env::crr(cgroup, target, PROGRAM_SAMPLE)?;
            Ok((before, read(programs)))
        })?;
        let [nanos, floor, socket] = [0, 1, 2].map(|i| match (&before[i], &after[i]) {
            (Ok(before), Ok(after)) => BpfStats::per_call(*before, *after),
            _ => f64::NAN,
        });
        if nanos.is_finite() {
            let programs = &mut self.result.program;
            let index = programs
                .iter()
                .position(|r| r.path == mechanism && r.routes == scale)
                .unwrap_or_else(|| {
                    programs.push(ProgramRow {
                        path: mechanism,
                        routes: scale,
                        ..ProgramRow::default()
                    });
                    programs.len() - 1
                });
            let row = &mut programs[index];
            row.nanos.push(nanos);
            row.floor.push(floor);
            row.socket.push(socket);
        }
        Ok(())
    }

    /// How many connections make a sample of about [`SAMPLE`].
    fn count(
        &mut self,
        mechanism: Mechanism,
        scale: usize,
        cgroup: &egress_tests::TestCgroup,
        target: &str,
    ) -> anyhow::Result<u32> {
        if let Some((_, count)) = self.counts.iter().find(|(k, _)| *k == (mechanism, scale)) {
            return Ok(*count);
        }
        let micros = env::crr(cgroup, target, 100).context("calibrating")?;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a positive count"
        )]
        let count = (SAMPLE.as_secs_f64() * 1e6 / micros.max(1.0)).clamp(100.0, 40_000.0) as u32;
        self.counts.push(((mechanism, scale), count));
        Ok(count)
    }
}

fn push_row(rows: &mut Vec<Row>, mechanism: Mechanism, scale: usize, micros: f64) {
    match rows
        .iter_mut()
        .find(|r| r.mechanism == mechanism && r.scale == scale)
    {
        Some(row) => row.micros.push(micros),
        None => rows.push(Row {
            mechanism,
            scale,
            micros: vec![micros],
        }),
    }
}

/// 1 KiB request/response transactions per second on 1 and on 16 connections: direct, through
/// the redirect, and through the sidecar proxy; interleaved rounds.
fn tps(tree: &PodTree, echo: u16) -> anyhow::Result<Vec<Tps>> {
    let mut results: Vec<Tps> = TPS_CONNECTIONS
        .into_iter()
        .flat_map(|connections| {
            [
                Mechanism::Direct,
                Mechanism::HookRedirect,
                Mechanism::Sidecar,
            ]
            .map(|mechanism| Tps {
                mechanism,
                connections,
                rates: Vec::new(),
            })
        })
        .collect();
    let direct = format!("127.0.0.1:{echo}");
    let routed = format!("{ROUTED}:{echo}");
    for _ in 0..TPS_ROUNDS {
        for tps in &mut results {
            let _sidecar = if tps.mechanism == Mechanism::Sidecar {
                Some(Sidecar::start(&[echo])?)
            } else {
                None
            };
            let (cgroup, target) = match tps.mechanism {
                Mechanism::Direct => (&tree.outside, &direct),
                Mechanism::HookRedirect => (&tree.selected, &routed),
                _ => (&tree.outside, &routed),
            };
            let connections = tps.connections.to_string();
            let json = env::load(cgroup, &["rr", target, TPS_SECONDS, &connections])?;
            let rate = json["transactions_per_second"]
                .as_f64()
                .context("rr output")?;
            println!(
                "bench: {} transactions on {connections} connections: {rate:.0}/s",
                tps.mechanism.name()
            );
            tps.rates.push(rate);
        }
    }
    Ok(results)
}
