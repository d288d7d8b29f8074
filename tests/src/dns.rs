//! A real DNS server for the tests: dnsmasq on a loopback port, answering from a hosts file
//! the test rewrites (SIGHUP reloads it), authoritative for `.test`.

use std::{
    fmt::Write as _,
    net::UdpSocket,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A dnsmasq process and its files. Dropping it stops the process.
#[derive(Debug)]
pub struct DnsServer {
    dir: PathBuf,
    /// The port on 127.0.0.1.
    pub port: u16,
    ttl: u32,
    cnames: Vec<(String, String)>,
    child: Option<Child>,
}

impl DnsServer {
    /// Starts dnsmasq answering `hosts` (name, address) and `cnames` (alias, target) with `ttl`.
    pub fn start(ttl: u32, hosts: &[(&str, &str)], cnames: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(crate::unique("dns"));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("mkdir {}: {err}", dir.display()));
        let port = restartable_port();
        let mut server = Self {
            dir,
            port,
            ttl,
            cnames: cnames
                .iter()
                .map(|(a, t)| ((*a).to_owned(), (*t).to_owned()))
                .collect(),
            child: None,
        };
        server.write_hosts(hosts);
        server.spawn();
        server
    }

    /// `127.0.0.1:PORT`, for `dns.servers`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn hosts_path(&self) -> PathBuf {
        self.dir.join("hosts")
    }

    /// The query log (dnsmasq `--log-queries`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
    }

    /// How many queries for `name` the server has seen.
    pub fn queries_for(&self, name: &str) -> usize {
        self.log()
            .lines()
            .filter(|line| line.contains("query[") && line.contains(&format!(" {name} from")))
            .count()
    }

    fn write_hosts(&self, hosts: &[(&str, &str)]) {
        let mut text = String::new();
        for (name, addr) in hosts {
            let _ = writeln!(text, "{addr} {name}");
        }
        std::fs::write(self.hosts_path(), text).unwrap_or_else(|err| panic!("write hosts: {err}"));
    }

    /// How often dnsmasq has read the hosts file so far (it logs `read FILE - N names` each
    /// time, at start and on every SIGHUP).
    fn hosts_reads(&self) -> usize {
        self.log()
            .matches(&format!("read {} - ", self.hosts_path().display()))
            .count()
    }

    /// Waits until dnsmasq has read the hosts file more than `reads` times.
    fn wait_hosts_read(&self, reads: usize) {
        let deadline = Instant::now() + crate::scaled(Duration::from_secs(10));
        while self.hosts_reads() <= reads {
            assert!(
                Instant::now() < deadline,
                "dnsmasq never (re-)read its hosts file; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Replaces the answers: SIGHUP makes dnsmasq re-read the hosts file, and this waits until
    /// it has (its log says so), so the next query gets the new answers.
    pub fn set_hosts(&self, hosts: &[(&str, &str)]) {
        let reads = self.hosts_reads();
        self.write_hosts(hosts);
        let pid = self.child.as_ref().expect("dnsmasq is not running").id();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(i32::try_from(pid).expect("pid"), libc::SIGHUP) };
        self.wait_hosts_read(reads);
    }

    /// Starts dnsmasq (again, after [`DnsServer::stop`]) and waits until it answers and has
    /// logged reading the hosts file (so that [`DnsServer::set_hosts`] counts from there).
    pub fn spawn(&mut self) {
        let reads = self.hosts_reads();
        let mut command = Command::new("dnsmasq");
        command
            .arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .args([
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--bind-interfaces",
                "--log-queries",
            ])
            .arg("--listen-address=127.0.0.1")
            .arg(format!("--port={}", self.port))
            .arg(format!("--addn-hosts={}", self.hosts_path().display()))
            .arg(format!("--local-ttl={}", self.ttl))
            .arg(format!("--neg-ttl={}", self.ttl))
            .arg("--local=/test/")
            .arg("--user=root")
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .arg(format!(
                "--log-facility={}",
                self.dir.join("dnsmasq.log").display()
            ));
        for (alias, target) in &self.cnames {
            command.arg(format!("--cname={alias},{target}"));
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("start dnsmasq (installed by `cargo xtask setup`): {err}")
            });
        self.child = Some(child);
        self.wait_answering();
        self.wait_hosts_read(reads);
    }

    /// Stops dnsmasq: queries time out from now on.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait_answering(&self) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        // A query for probe.test, type A: id, flags (RD), 1 question.
        let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["probe", "test"] {
            query.push(u8::try_from(label.len()).expect("label"));
            query.extend_from_slice(label.as_bytes());
        }
        query.extend_from_slice(&[0, 0, 1, 0, 1]);
        let deadline = Instant::now() + crate::scaled(Duration::from_secs(10));
        let mut buf = [0; 512];
        while Instant::now() < deadline {
            let _ = socket.send_to(&query, ("127.0.0.1", self.port));
            if socket.recv(&mut buf).is_ok() {
                return;
            }
        }
        panic!(
            "dnsmasq on port {} never answered; log:\n{}",
            self.port,
            self.log()
        );
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A UDP port on 127.0.0.1, free now, below the kernel's ephemeral range: dnsmasq is stopped
/// and started again on it, and a port from that range can meanwhile go to any other test's
/// client socket (then dnsmasq cannot bind and never answers).
fn restartable_port() -> u16 {
    const LOW: u32 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(LOW).max(1);
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for attempt in 0..1_000_u32 {
        let port = LOW + seed.wrapping_add(attempt.wrapping_mul(7_919)) % span;
        let port = u16::try_from(port).expect("below the ephemeral range");
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no UDP port free below {ephemeral}");
}
