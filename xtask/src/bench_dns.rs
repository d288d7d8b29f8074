//! The DNS part of `cargo xtask bench`: 1,000 hostnames with TTLs from 1 to 300 s served by a
//! local dnsmasq; the agent's CPU share and RSS while it keeps them fresh, and the time from an
//! answer changing to the routes map reflecting it.
//!
//! Runs inside the benchmark's private network namespace.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use egress_tests::TestCgroup;

use crate::shell::release_bin;

/// Hostnames with spread TTLs.
pub(crate) const HOSTS: u32 = 1_000;
/// How long CPU and memory are sampled.
const STEADY: Duration = Duration::from_secs(30);
/// Answer changes timed.
const CHANGES: u32 = 20;
const DNS_PORT: u16 = 5300;

/// What the DNS benchmark measured.
pub(crate) struct DnsResult {
    pub(crate) cpu_share: f64,
    pub(crate) rss_mib: f64,
    pub(crate) queries_per_sec: f64,
    pub(crate) change_ms: Vec<f64>,
}

struct Guard {
    children: Vec<Child>,
    dir: PathBuf,
    bpffs_dir: PathBuf,
    cgroup: TestCgroup,
}

impl Drop for Guard {
    fn drop(&mut self) {
        crate::shell::stop_and_uninstall(&mut self.children, &self.bpffs_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the DNS benchmark.
pub(crate) fn run() -> anyhow::Result<DnsResult> {
    let mut guard = Guard {
        children: Vec::new(),
        dir: std::env::temp_dir().join("egress-bench-dns"),
        bpffs_dir: PathBuf::from("/sys/fs/bpf/egress-bench-dns"),
        cgroup: TestCgroup::named("egress-bench-dns"),
    };
    std::fs::create_dir_all(&guard.dir)?;
    let hosts_file = guard.dir.join("hosts");
    let dnsmasq_pid = start_dnsmasq(&mut guard, &hosts_file)?;

    let mut hosts: Vec<String> = (0..HOSTS).map(|i| format!("h{i:04}.test")).collect();
    hosts.push("change.test".to_owned());
    let config = format!(
        "attach: {cg}\ndns:\n  servers: ['127.0.0.1:{DNS_PORT}']\n  grace: 0s\nrules:\n  - name: many\n    gateway: 127.0.0.1\n    hosts: [{}]\n    ports: [{{port: 443}}]\n",
        hosts.join(", "),
        cg = guard.cgroup.path().display()
    );
    std::fs::write(guard.dir.join("config.yaml"), config)?;
    let agent = Command::new(release_bin("egress-agent"))
        .args(["run", "--admin-addr", "off", "--config"])
        .arg(guard.dir.join("config.yaml"))
        .arg("--bpffs-dir")
        .arg(&guard.bpffs_dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(guard.dir.join("agent.log"))?)
        .spawn()?;
    let agent_pid = agent.id();
    guard.children.push(agent);

    wait_for(
        &guard.bpffs_dir,
        "127.65.0.1/32",
        Duration::from_mins(1),
        |routes| routes.matches("\"destination\"").count() > HOSTS as usize,
    )?;
    println!(
        "dns: {} hostnames routed; sampling the agent for {STEADY:?}",
        HOSTS + 1
    );
    let queries_before = query_count(&guard.dir);
    let cpu_before = cpu_ticks(agent_pid)?;
    let start = Instant::now();
    std::thread::sleep(STEADY);
    let cpu_after = cpu_ticks(agent_pid)?;
    let elapsed = start.elapsed().as_secs_f64();
    let queries_per_sec =
        f64::from(u32::try_from(query_count(&guard.dir) - queries_before)?) / elapsed;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_sec = f64::from(u32::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })?);
    let cpu_share = f64::from(u32::try_from(cpu_after - cpu_before)?) / ticks_per_sec / elapsed;
    let rss_mib = rss_kib(agent_pid)? / 1024.0;

    let mut change_ms = Vec::new();
    for k in 2..2 + CHANGES {
        let address = format!("127.65.0.{k}");
        std::fs::write(&hosts_file, format!("{address} change.test\n"))?;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(i32::try_from(dnsmasq_pid)?, libc::SIGHUP) };
        let changed = Instant::now();
        wait_for(
            &guard.bpffs_dir,
            &format!("{address}/32"),
            Duration::from_secs(10),
            |_| true,
        )?;
        change_ms.push(changed.elapsed().as_secs_f64() * 1000.0);
    }
    drop(guard);
    Ok(DnsResult {
        cpu_share,
        rss_mib,
        queries_per_sec,
        change_ms,
    })
}

/// Writes dnsmasq's records and starts it; returns its pid.
fn start_dnsmasq(guard: &mut Guard, hosts_file: &Path) -> anyhow::Result<u32> {
    let mut conf = String::new();
    for i in 0..HOSTS {
        let [_, _, c, d] = (0x7f40_0000_u32 + i + 1).to_be_bytes();
        let _ = writeln!(
            conf,
            "host-record=h{i:04}.test,127.64.{c}.{d},{}",
            i % 300 + 1
        );
    }
    std::fs::write(guard.dir.join("dnsmasq.conf"), conf)?;
    std::fs::write(hosts_file, "127.65.0.1 change.test\n")?;
    let dnsmasq = Command::new("dnsmasq")
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
            guard.dir.join("dnsmasq.conf").display()
        ))
        .arg(format!("--addn-hosts={}", hosts_file.display()))
        .arg("--listen-address=127.0.0.1")
        .arg(format!("--port={DNS_PORT}"))
        .args(["--local-ttl=1", "--cache-size=0", "--log-queries"])
        .arg(format!(
            "--log-facility={}",
            guard.dir.join("dnsmasq.log").display()
        ))
        .arg(format!("--pid-file={}", guard.dir.join("pid").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting dnsmasq")?;
    let dnsmasq_pid = dnsmasq.id();
    guard.children.push(dnsmasq);
    Ok(dnsmasq_pid)
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

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("stat format")?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields after the command name start at field 3 (state); utime is 14, stime 15.
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

fn rss_kib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS")?;
    let kib: u32 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?;
    Ok(f64::from(kib))
}

/// The report section.
pub(crate) fn report(result: &DnsResult, median: fn(&[f64]) -> f64) -> String {
    let mut sorted = result.change_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let p90 = sorted
        .get(sorted.len() * 9 / 10)
        .copied()
        .unwrap_or(f64::NAN);
    let max = sorted.last().copied().unwrap_or(f64::NAN);
    let mut text = String::new();
    let _ = writeln!(text, "\n## DNS engine\n");
    let _ = writeln!(
        text,
        "{HOSTS} hostnames with TTLs spread over 1–300 s (plus one with a 1 s TTL whose answer changes),"
    );
    let _ = writeln!(
        text,
        "served by dnsmasq on loopback; the agent sampled for {} s once all were routed.\n",
        STEADY.as_secs()
    );
    let _ = writeln!(text, "| measure | value |");
    let _ = writeln!(text, "|---|---:|");
    let _ = writeln!(
        text,
        "| agent CPU (share of one core) | {:.2}% |",
        result.cpu_share * 100.0
    );
    let _ = writeln!(text, "| agent RSS | {:.1} MiB |", result.rss_mib);
    let _ = writeln!(
        text,
        "| queries per second (A and AAAA) | {:.1} |",
        result.queries_per_sec
    );
    let _ = writeln!(
        text,
        "| answer change → routes map, median ({CHANGES} changes, TTL 1 s) | {:.0} ms |",
        median(&result.change_ms)
    );
    let _ = writeln!(text, "| answer change → routes map, p90 | {p90:.0} ms |");
    let _ = writeln!(text, "| answer change → routes map, max | {max:.0} ms |");
    let _ = writeln!(
        text,
        "\nThe change latency is bounded by the record's TTL: the agent re-asks when the TTL runs out"
    );
    let _ = writeln!(
        text,
        "(up to 10% early, never more than once a second) and writes the maps as soon as the answer differs."
    );
    text
}
