//! DNS: the agent's own engine (1,000 hostnames, TTLs 1–300 s, from dnsmasq), and learning from
//! the answers pods receive (a rotating server, a client that connects the moment `recvfrom`
//! returns, the programs' cost per answer and per other packet, bulk throughput with the
//! programs attached).

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use egress_tests::resolvers::fixtures;

use super::env::{self, Agent, BpfStats, PodTree};
use crate::shell::release_bin;

/// Hostnames with spread TTLs.
pub(crate) const HOSTS: u32 = 1_000;
/// How long CPU and memory are sampled.
pub(crate) const STEADY: Duration = Duration::from_secs(30);
/// Answer changes timed.
pub(crate) const CHANGES: u32 = 20;
/// Resolve-then-connect rounds.
pub(crate) const ROUNDS: u32 = 1_000;
/// Bulk throughput rounds (each case) and seconds per round.
const BULK_ROUNDS: usize = 10;
const BULK_SECONDS: &str = "2";
/// Bulk transfers with the statistics on, for the programs' own time.
const BULK_PROGRAM_ROUNDS: usize = 3;
const DNS_PORT: u16 = 5300;
/// The rotating server's address (port 53).
const ROTATING: &str = "127.53.0.200";

/// What this part measured.
pub(crate) struct DnsResult {
    pub(crate) cpu_share: f64,
    pub(crate) rss_mib: f64,
    pub(crate) queries_per_sec: f64,
    pub(crate) change_ms: Vec<f64>,
    /// (gateway, direct, failed) of the resolve-then-connect rounds.
    pub(crate) connect_after_answer: (u64, u64, u64),
    /// `dns_ingress` (with its tail calls) per answer, ns.
    pub(crate) ns_per_answer: f64,
    /// `dns_ingress` and `dns_egress` per packet during bulk TCP, ns.
    pub(crate) ns_per_packet: f64,
    /// Time in `dns_ingress` and `dns_egress` ÷ the transfer's time, during bulk TCP.
    pub(crate) bulk_program_share: f64,
    /// Bulk bytes per second, round by round: outside (no programs), selected (programs
    /// attached).
    pub(crate) bulk: (Vec<f64>, Vec<f64>),
}

impl DnsResult {
    /// Each round's bulk throughput with the programs ÷ without.
    pub(crate) fn bulk_ratios(&self) -> Vec<f64> {
        self.bulk
            .1
            .iter()
            .zip(&self.bulk.0)
            .map(|(with, without)| with / without)
            .collect()
    }

    /// The median of [`Self::bulk_ratios`].
    pub(crate) fn bulk_ratio(&self) -> f64 {
        super::median(&self.bulk_ratios())
    }
}

/// Children killed on drop.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs this part.
pub(crate) fn run() -> anyhow::Result<DnsResult> {
    let (cpu_share, rss_mib, queries_per_sec, change_ms) = engine()?;
    let learning = learning()?;
    Ok(DnsResult {
        cpu_share,
        rss_mib,
        queries_per_sec,
        change_ms,
        connect_after_answer: learning.0,
        ns_per_answer: learning.1,
        ns_per_packet: learning.2,
        bulk_program_share: learning.3,
        bulk: learning.4,
    })
}

/// The agent's engine on 1,000 hostnames: CPU, RSS, queries per second, and how fast a changed
/// answer reaches the routes.
fn engine() -> anyhow::Result<(f64, f64, f64, Vec<f64>)> {
    let tree = PodTree::new("egress-bench-dns");
    let dir = std::env::temp_dir().join("egress-bench-dnsmasq");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let hosts_file = dir.join("hosts");
    let mut children = Children(Vec::new());
    let dnsmasq = start_dnsmasq(&dir, &hosts_file)?;
    let dnsmasq_pid = dnsmasq.id();
    children.0.push(dnsmasq);
    let mut hosts: Vec<String> = (0..HOSTS).map(|i| format!("h{i:04}.test")).collect();
    hosts.push("change.test".to_owned());
    let config = format!(
        "attach: {cg}\ndns:\n  servers: ['127.0.0.1:{DNS_PORT}']\n  grace: 0s\nrules:\n  - name: many\n    gateway: 127.0.0.1\n    hosts: [{}]\n    ports: [{{port: 443}}]\nworkloads:\n  cgroups: [{pod}]\n",
        hosts.join(", "),
        cg = tree.root.path().display(),
        pod = tree.pod.path().display(),
    );
    let agent = Agent::start("egress-bench-dns", &config, &[])?;
    wait_for(
        &agent.bpffs_dir,
        "127.65.0.1/32",
        Duration::from_mins(1),
        |routes| routes.matches("\"destination\"").count() > HOSTS as usize,
    )?;
    println!(
        "bench: {} hostnames routed; sampling the agent for {STEADY:?}",
        HOSTS + 1
    );
    let queries_before = query_count(&dir);
    let started = Instant::now();
    let cpu_share = env::cpu_share(agent.pid(), STEADY)?;
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let queries_per_sec =
        (query_count(&dir) - queries_before) as f64 / started.elapsed().as_secs_f64();
    let rss_mib = env::rss_mib(agent.pid())?;
    let mut change_ms = Vec::new();
    for k in 2..2 + CHANGES {
        let address = format!("127.65.0.{k}");
        std::fs::write(&hosts_file, format!("{address} change.test\n"))?;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(i32::try_from(dnsmasq_pid)?, libc::SIGHUP) };
        let changed = Instant::now();
        wait_for(
            &agent.bpffs_dir,
            &format!("{address}/32"),
            Duration::from_secs(10),
            |_| true,
        )?;
        change_ms.push(changed.elapsed().as_secs_f64() * 1000.0);
    }
    drop((agent, children));
    let _ = std::fs::remove_dir_all(&dir);
    Ok((cpu_share, rss_mib, queries_per_sec, change_ms))
}

type Learning = ((u64, u64, u64), f64, f64, f64, (Vec<f64>, Vec<f64>));

/// Learning from answers: a wildcard the agent never resolves, a server rotating 4 of 40
/// addresses per answer.
fn learning() -> anyhow::Result<Learning> {
    let tree = PodTree::new("egress-bench-learn");
    let mut children = Children(Vec::new());
    let dir = std::env::temp_dir().join("egress-bench-learn");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let pool: Vec<String> = (1..=40).map(|i| format!("127.1.0.{i}")).collect();
    let zone =
        serde_json::json!({"ttl": 1, "names": {"*.cdn.test": {"pool": pool, "per_answer": 4}}});
    std::fs::write(dir.join("zone.json"), zone.to_string())?;
    children.0.push(listening(
        Command::new("python3")
            .arg(fixtures().join("rotating_dns.py"))
            .args(["--listen", ROTATING, "--port", "53", "--zone-file"])
            .arg(dir.join("zone.json")),
    )?);
    let gateway = std::net::TcpListener::bind("127.0.0.3:0")?;
    let port = gateway.local_addr()?.port();
    std::thread::spawn(move || {
        for mut stream in gateway.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut stream, b"gateway");
        }
    });
    children.0.push(listening(
        Command::new("python3")
            .arg(fixtures().join("greeter.py"))
            .args(["--port", &port.to_string(), "127.1.0.1-127.1.0.40"]),
    )?);
    let config = format!(
        "attach: {root}\ndns:\n  servers: ['{ROTATING}:53']\n  grace: 1m\nrules:\n  - name: cdn\n    gateway: 127.0.0.3\n    hosts: ['*.cdn.test']\n    ports: [{{port: {port}}}]\nworkloads:\n  cgroups: [{pod}]\n",
        root = tree.root.path().display(),
        pod = tree.pod.path().display(),
    );
    let agent = Agent::start("egress-bench-learn", &config, &[])?;
    agent.wait_log("programs attached", Duration::from_mins(1))?;
    let stats = BpfStats::take()?;
    let ingress = agent.program_id("dns_ingress")?;
    let egress = agent.program_id("dns_egress")?;

    let json = env::load(
        &tree.selected,
        &[
            "resolve-connect",
            ROTATING,
            "a.cdn.test",
            &port.to_string(),
            &ROUNDS.to_string(),
        ],
    )?;
    let count = |key: &str| json[key].as_u64().unwrap_or(0);
    let connect_after_answer = (count("gateway"), count("direct"), count("failed"));
    println!("bench: resolve-then-connect: {json}");

    let (before, answers, after) = stats.on(|| {
        let before = BpfStats::read(ingress)?;
        let answers = env::load(&tree.selected, &["resolve", ROTATING, "b.cdn.test", "2000"])?;
        Ok((before, answers, BpfStats::read(ingress)?))
    })?;
    #[expect(clippy::cast_precision_loss, reason = "a per-answer figure")]
    let ns_per_answer = after.0.saturating_sub(before.0) as f64
        / answers["answers"].as_u64().unwrap_or(1).max(1) as f64;

    let sink = env::sink_server()?;
    let target = format!("127.0.0.1:{sink}");
    let (mut outside, mut selected) = (Vec::new(), Vec::new());
    let mut packet_ns = Vec::new();
    let mut shares = Vec::new();
    let rate = |cgroup| -> anyhow::Result<f64> {
        env::load(cgroup, &["bulk", &target, BULK_SECONDS])?["bytes_per_second"]
            .as_f64()
            .context("bulk output")
    };
    for round in 0..BULK_ROUNDS {
        // Pairs in alternating order, so a drift over the run favours neither side.
        if round % 2 == 0 {
            outside.push(rate(&tree.outside)?);
        }
        selected.push(rate(&tree.selected)?);
        if round % 2 == 1 {
            outside.push(rate(&tree.outside)?);
        }
    }
    // The programs' own time, in transfers of their own with the statistics on.
    for _ in 0..BULK_PROGRAM_ROUNDS {
        let read = || anyhow::Ok((BpfStats::read(ingress)?, BpfStats::read(egress)?));
        let (before, after) = stats.on(|| {
            let before = read()?;
            rate(&tree.selected)?;
            Ok((before, read()?))
        })?;
        let time = (after.0.0 + after.1.0).saturating_sub(before.0.0 + before.1.0);
        let runs = (after.0.1 + after.1.1).saturating_sub(before.0.1 + before.1.1);
        #[expect(clippy::cast_precision_loss, reason = "a per-packet figure")]
        packet_ns.push(time as f64 / runs.max(1) as f64);
        #[expect(clippy::cast_precision_loss, reason = "a share")]
        shares.push(time as f64 / (BULK_SECONDS.parse::<f64>()? * 1e9));
    }
    drop((stats, agent, children));
    let _ = std::fs::remove_dir_all(&dir);
    Ok((
        connect_after_answer,
        ns_per_answer,
        super::median(&packet_ns),
        super::median(&shares),
        (outside, selected),
    ))
}

/// Spawns `command` and waits for its `listening` line.
fn listening(command: &mut Command) -> anyhow::Result<Child> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    if !line.starts_with("listening") {
        let _ = child.kill();
        bail!("{command:?} did not start: {line:?}");
    }
    Ok(child)
}

/// Writes dnsmasq's records and starts it.
fn start_dnsmasq(dir: &Path, hosts_file: &Path) -> anyhow::Result<Child> {
    let mut conf = String::new();
    for i in 0..HOSTS {
        let [_, _, c, d] = (0x7f40_0000_u32 + i + 1).to_be_bytes();
        let _ = writeln!(
            conf,
            "host-record=h{i:04}.test,127.64.{c}.{d},{}",
            i % 300 + 1
        );
    }
    std::fs::write(dir.join("dnsmasq.conf"), conf)?;
    std::fs::write(hosts_file, "127.65.0.1 change.test\n")?;
    Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--local=/test/",
            "--user=root",
        ])
        .arg(format!(
            "--conf-file={}",
            dir.join("dnsmasq.conf").display()
        ))
        .arg(format!("--addn-hosts={}", hosts_file.display()))
        .arg("--listen-address=127.0.0.1")
        .arg(format!("--port={DNS_PORT}"))
        .args(["--local-ttl=1", "--cache-size=0", "--log-queries"])
        .arg(format!(
            "--log-facility={}",
            dir.join("dnsmasq.log").display()
        ))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting dnsmasq")
}

/// Polls `maps routes -o json` every 10 ms until it contains `needle` and `more` holds.
fn wait_for(
    bpffs_dir: &Path,
    needle: &str,
    timeout: Duration,
    more: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let out = Command::new(release_bin("egress-agent"))
            .args(["maps", "routes", "-o", "json", "--bpffs-dir"])
            .arg(bpffs_dir)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains(&format!("\"{needle}\"")) && more(&text) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("routes never showed {needle}")
}

fn query_count(dir: &Path) -> u64 {
    let log = std::fs::read_to_string(dir.join("dnsmasq.log")).unwrap_or_default();
    log.lines().filter(|l| l.contains("query[")).count() as u64
}
