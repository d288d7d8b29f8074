//! What every part of the benchmark runs in: a private network namespace, cgroups at a pod's
//! depth, loopback servers, the agent in standalone mode, and readings of programs and
//! processes.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use egress_tests::TestCgroup;

use crate::shell::{self, release_bin};

/// Moves this process into a new network namespace with only loopback up, so that nftables
/// and iptables rules and test traffic never touch the host's networking.
pub(crate) fn enter_private_netns() -> anyhow::Result<()> {
    // SAFETY: plain syscall; the process is single-threaded here.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        bail!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
    }
    shell::run(Command::new("ip").args(["link", "set", "lo", "up"]))?;
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65000")?;
    std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "1")?;
    // Hundreds of thousands of server-closed connections would otherwise fill the port space
    // with `TIME_WAIT`; without buckets the closing side goes straight to CLOSED.
    std::fs::write("/proc/sys/net/ipv4/tcp_max_tw_buckets", "0")?;
    Ok(())
}

/// Cgroups as a node lays out pods: the agent attaches at level 1, a selected pod's entry is
/// at level 3 and its process at level 4 (as a container scope inside a pod cgroup). The
/// cases without a hook run at the same depth in a tree of their own.
pub(crate) struct PodTree {
    /// The selected pod's container, where selected processes run (level 4).
    pub(crate) selected: TestCgroup,
    /// The selected pod (level 3): the cgroup entry.
    pub(crate) pod: TestCgroup,
    /// An unselected pod's container (level 4).
    pub(crate) unselected: TestCgroup,
    /// Kept so the tree is removed leaves first.
    _other: TestCgroup,
    _kubepods: TestCgroup,
    /// The attach point (level 1).
    pub(crate) root: TestCgroup,
    /// A container at level 4 outside the attach point: no hook runs there.
    pub(crate) outside: TestCgroup,
    /// Its ancestors, deepest first.
    _outside_parents: [TestCgroup; 3],
}

impl PodTree {
    /// The tree under `/<name>` and `/<name>-outside`.
    pub(crate) fn new(name: &str) -> Self {
        let root = TestCgroup::named(name);
        let kubepods = root.child("kubepods");
        let pod = kubepods.child("pod");
        let other = kubepods.child("other");
        let outside_top = TestCgroup::named(&format!("{name}-outside"));
        let outside_kubepods = outside_top.child("kubepods");
        let outside_pod = outside_kubepods.child("pod");
        Self {
            selected: pod.child("container"),
            unselected: other.child("container"),
            pod,
            _other: other,
            _kubepods: kubepods,
            root,
            outside: outside_pod.child("container"),
            _outside_parents: [outside_pod, outside_kubepods, outside_top],
        }
    }
}

/// The agent in standalone mode on a config file; dropping it stops it and uninstalls.
pub(crate) struct Agent {
    child: Child,
    /// How much of the log was written before the last config change: waits look past it.
    log_mark: std::cell::Cell<usize>,
    pub(crate) dir: PathBuf,
    pub(crate) bpffs_dir: PathBuf,
}

impl Agent {
    /// Starts the agent on `config` under `/tmp/<name>` and `/sys/fs/bpf/<name>`.
    pub(crate) fn start(name: &str, config: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(name);
        let bpffs_dir = PathBuf::from("/sys/fs/bpf").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let _ = Command::new(release_bin("egress-agent"))
            .args(["uninstall", "--bpffs-dir"])
            .arg(&bpffs_dir)
            .output();
        let agent = Self::write_config_in(&dir, config).and_then(|()| {
            Ok(Command::new(release_bin("egress-agent"))
                .args(["run", "--admin-addr", "off", "--config"])
                .arg(dir.join("config.yaml"))
                .arg("--bpffs-dir")
                .arg(&bpffs_dir)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("agent.log"))?)
                .spawn()?)
        })?;
        Ok(Self {
            child: agent,
            log_mark: std::cell::Cell::new(0),
            dir,
            bpffs_dir,
        })
    }

    fn write_config_in(dir: &Path, config: &str) -> anyhow::Result<()> {
        let staged = dir.join("config.yaml.new");
        std::fs::write(&staged, config)?;
        std::fs::rename(&staged, dir.join("config.yaml"))?;
        Ok(())
    }

    /// Replaces the config (the agent reloads it); later waits read only what is logged after.
    pub(crate) fn write_config(&self, config: &str) -> anyhow::Result<()> {
        let written = std::fs::metadata(self.dir.join("agent.log")).map_or(0, |m| m.len());
        self.log_mark
            .set(usize::try_from(written).unwrap_or(usize::MAX));
        Self::write_config_in(&self.dir, config)
    }

    /// The agent's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to `timeout`) until the log contains `needle` after the last config change.
    pub(crate) fn wait_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let path = self.dir.join("agent.log");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let log = std::fs::read(&path).unwrap_or_default();
            if String::from_utf8_lossy(log.get(self.log_mark.get()..).unwrap_or_default())
                .contains(needle)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("agent never logged {needle:?}; see {}", path.display())
    }

    /// The kernel id of an attached program, by name.
    pub(crate) fn program_id(&self, program: &str) -> anyhow::Result<u64> {
        let text = shell::output(
            Command::new(release_bin("egress-agent"))
                .args(["maps", "stats", "-o", "json", "--bpffs-dir"])
                .arg(&self.bpffs_dir),
        )?;
        let json: serde_json::Value = serde_json::from_str(&text)?;
        json["attachments"]
            .as_array()
            .and_then(|list| list.iter().find(|a| a["program"] == program))
            .and_then(|a| a["programId"].as_u64())
            .with_context(|| format!("{program} is not attached"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        stop_and_uninstall(&mut self.child, &self.bpffs_dir);
    }
}

/// Stops an agent and removes what it pinned under `bpffs_dir` (best effort: for `Drop`).
pub(crate) fn stop_and_uninstall(agent: &mut Child, bpffs_dir: &Path) {
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = Command::new(release_bin("egress-agent"))
        .args(["uninstall", "--bpffs-dir"])
        .arg(bpffs_dir)
        .output();
}

/// `kernel.bpf_stats_enabled`, held by the bench: off except while a program's own cost is
/// read, because the statistics add two clock reads to every run of every program, and so to
/// every hooked connection or packet the other figures time. Restored on drop.
pub(crate) struct BpfStats {
    was: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    /// Takes the setting over, off.
    pub(crate) fn take() -> anyhow::Result<Self> {
        let was = std::fs::read_to_string(BPF_STATS).unwrap_or_else(|_| "0".into());
        Self::set(false)?;
        Ok(Self { was })
    }

    /// Runs `measure` with the statistics on.
    #[expect(
        clippy::unused_self,
        reason = "only the holder of the setting turns it on"
    )]
    pub(crate) fn on<T>(&self, measure: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        Self::set(true)?;
        let result = measure();
        Self::set(false)?;
        result
    }

    fn set(on: bool) -> anyhow::Result<()> {
        std::fs::write(BPF_STATS, if on { "1" } else { "0" })
            .context("setting kernel.bpf_stats_enabled")
    }

    /// (run time ns, run count) of a program.
    pub(crate) fn read(id: u64) -> anyhow::Result<(u64, u64)> {
        let text = shell::output(Command::new("bpftool").args([
            "-j",
            "prog",
            "show",
            "id",
            &id.to_string(),
        ]))?;
        let json: serde_json::Value = serde_json::from_str(&text)?;
        Ok((
            json["run_time_ns"].as_u64().unwrap_or(0),
            json["run_cnt"].as_u64().unwrap_or(0),
        ))
    }

    /// ns per call between two readings (NaN when the program did not run).
    #[expect(
        clippy::cast_precision_loss,
        reason = "nanosecond totals are far below 2^52"
    )]
    pub(crate) fn per_call(before: (u64, u64), after: (u64, u64)) -> f64 {
        let runs = after.1.saturating_sub(before.1);
        if runs == 0 {
            return f64::NAN;
        }
        after.0.saturating_sub(before.0) as f64 / runs as f64
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, &self.was);
    }
}

/// Serves `listener` on threads forever with `serve` per connection.
fn spawn_server(listener: TcpListener, serve: fn(TcpStream)) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
}

/// A server on every loopback address (so the unselected case's un-rewritten destination is
/// served too) that closes each connection at once, as an origin ending a short exchange does
/// (a FIN: a reset would make a proxy retry the server); returns its port.
pub(crate) fn closing_server() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("0.0.0.0:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        if let Some((server, _)) = sample_cpus() {
            let _ = pin(server);
        }
        for stream in listener.incoming().flatten() {
            drop(stream);
        }
    });
    Ok(port)
}

/// A server on 127.0.0.1 answering every 1 KiB request with 1 KiB; returns its port.
pub(crate) fn echo_server() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    spawn_server(listener, |mut stream| {
        let _ = stream.set_nodelay(true);
        let mut buf = [0_u8; 1024];
        while stream.read_exact(&mut buf).is_ok() {
            if stream.write_all(&buf).is_err() {
                return;
            }
        }
    });
    Ok(port)
}

/// A server on 127.0.0.1 reading and discarding everything; returns its port.
pub(crate) fn sink_server() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    spawn_server(listener, |mut stream| {
        let mut buf = vec![0_u8; 256 * 1024];
        while stream.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    Ok(port)
}

/// Runs `count` connect/accept/close cycles to `target` from `cgroup`: µs per connection.
#[expect(
    clippy::cast_precision_loss,
    reason = "nanoseconds per connection are small"
)]
pub(crate) fn crr(cgroup: &TestCgroup, target: &str, count: u32) -> anyhow::Result<f64> {
    let mut command = Command::new(release_bin("egress-probe"));
    command.args(["crr", target, &count.to_string()]);
    cgroup.enter(&mut command);
    if let Some((_, client)) = sample_cpus() {
        // SAFETY: sched_setaffinity is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || pin(client));
        }
    }
    let out = shell::output(&mut command)?;
    let json: serde_json::Value = serde_json::from_str(out.trim())?;
    let ns = json["ns_per_connection"].as_u64().context("probe output")?;
    Ok(ns as f64 / 1000.0)
}

/// The CPUs the connection samples' server and client run on, each on its own (so every
/// sample's wakeups cross CPUs alike, rather than as the scheduler happens to place them):
/// the first and the last this process may use; `None` with fewer than two.
fn sample_cpus() -> Option<(usize, usize)> {
    // SAFETY: a plain bitmask, zeroed, filled by the kernel.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size given.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) } != 0 {
        return None;
    }
    let allowed: Vec<usize> = (0..usize::try_from(libc::CPU_SETSIZE).unwrap_or(0))
        // SAFETY: reading bits of a valid set.
        .filter(|cpu| unsafe { libc::CPU_ISSET(*cpu, &set) })
        .collect();
    match allowed.as_slice() {
        [first, .., last] => Some((*first, *last)),
        _ => None,
    }
}

/// Pins the calling thread (or, between fork and exec, the new process) to `cpu`.
fn pin(cpu: usize) -> std::io::Result<()> {
    // SAFETY: as in `sample_cpus`; only async-signal-safe calls.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (it came from a set).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: a valid set of the size given.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits (up to 30 s) until the machine is idle again: at least 90% over half a second.
/// Removing a million nftables elements or iptables rules leaves the kernel freeing them in
/// the background for a while; samples taken meanwhile would pay for it.
pub(crate) fn settle() -> anyhow::Result<()> {
    let busy_idle = || -> anyhow::Result<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .context("/proc/stat")?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        Ok((fields.iter().take(8).sum::<u64>() - idle, idle))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let (busy0, idle0) = busy_idle()?;
        std::thread::sleep(Duration::from_millis(500));
        let (busy1, idle1) = busy_idle()?;
        // iowait (counted as idle here) may go backwards (proc(5)).
        let (busy, idle) = (busy1.saturating_sub(busy0), idle1.saturating_sub(idle0));
        if idle * 10 >= (busy + idle) * 9 {
            return Ok(());
        }
    }
    println!("bench: the machine did not settle within 30 s; going on");
    Ok(())
}

/// Runs `egress-load ARGS` in `cgroup` and returns its JSON line.
pub(crate) fn load(cgroup: &TestCgroup, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut command = Command::new(release_bin("egress-load"));
    command.args(args);
    cgroup.enter(&mut command);
    let out = shell::output(&mut command)?;
    serde_json::from_str(out.trim()).with_context(|| format!("egress-load output {out:?}"))
}

/// CPU time of a process so far, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    #[expect(clippy::cast_precision_loss, reason = "ticks are small")]
    Ok(ticks as f64 / per_second as f64)
}

/// Resident memory of a process, in MiB.
pub(crate) fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmRSS")?
        .parse()?;
    Ok(kib / 1024.0)
}

/// Share of one core a process used over `period`.
pub(crate) fn cpu_share(pid: u32, period: Duration) -> anyhow::Result<f64> {
    let before = cpu_seconds(pid)?;
    let started = Instant::now();
    std::thread::sleep(period);
    Ok((cpu_seconds(pid)? - before) / started.elapsed().as_secs_f64())
}
