//! The DNS fixtures of `tests/dns-fixtures`: an authoritative server whose answers rotate,
//! TCP greeters that answer with their own address, and real stub resolvers (glibc, musl, Go,
//! dig, c-ares, Node) that resolve a name and connect to the first address, run inside a cgroup.
//! Everything stays on loopback.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
};

use crate::TestCgroup;

/// `tests/dns-fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dns-fixtures")
}

/// Spawns `command` and waits for its `listening ...` line; returns the child and the line.
fn spawn_listening(mut command: Command, what: &str) -> Option<(Child, String)> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|err| panic!("start {what}: {err}"));
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped stdout");
    let _ = BufReader::new(stdout).read_line(&mut line);
    if line.starts_with("listening") {
        Some((child, line.trim().to_owned()))
    } else {
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

/// `rotating_dns.py` on `127.53.0.N:53` (port 53, because resolv.conf cannot name another).
/// Dropping it stops the process.
#[derive(Debug)]
pub struct RotatingDns {
    /// `127.53.0.N`.
    pub ip: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl RotatingDns {
    /// Starts a server answering from `zone` (the JSON zone format of the fixtures' README).
    pub fn start(zone: &serde_json::Value) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(crate::unique("rotating-dns"));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("mkdir {}: {err}", dir.display()));
        let mut server = Self {
            ip: String::new(),
            dir,
            child: None,
        };
        server.set_zone(zone);
        for _ in 0..20 {
            let n = 1 + (std::process::id() + NEXT.fetch_add(1, Ordering::Relaxed)) % 250;
            server.ip = format!("127.53.0.{n}");
            if server.spawn() {
                return server;
            }
        }
        panic!("rotating_dns.py did not start on any 127.53.0.N:53");
    }

    fn spawn(&mut self) -> bool {
        let mut command = Command::new("python3");
        command
            .arg(fixtures().join("rotating_dns.py"))
            .args(["--listen", &self.ip, "--port", "53", "--zone-file"])
            .arg(self.dir.join("zone.json"))
            .arg("--log")
            .arg(self.dir.join("queries.log"));
        match spawn_listening(command, "rotating_dns.py") {
            Some((child, _)) => {
                self.child = Some(child);
                true
            }
            None => false,
        }
    }

    /// `127.53.0.N:53`, for `dns.servers`.
    pub fn addr(&self) -> String {
        format!("{}:53", self.ip)
    }

    /// Replaces the zone (the server reloads it before the next query).
    pub fn set_zone(&self, zone: &serde_json::Value) {
        let staged = self.dir.join("zone.json.new");
        std::fs::write(&staged, zone.to_string())
            .unwrap_or_else(|err| panic!("write {}: {err}", staged.display()));
        std::fs::rename(&staged, self.dir.join("zone.json")).expect("rename zone");
    }

    /// A resolv.conf naming only this server, one attempt each, waiting 1 s for an answer
    /// (scaled, in whole seconds; glibc takes at most 30).
    pub fn resolv_conf(&self) -> PathBuf {
        let path = self.dir.join("resolv.conf");
        let timeout = crate::scaled(std::time::Duration::from_secs(1))
            .as_secs()
            .min(30);
        std::fs::write(
            &path,
            format!(
                "nameserver {}\noptions timeout:{timeout} attempts:1\n",
                self.ip
            ),
        )
        .unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
        path
    }

    /// Stops the server (a DNS outage); [`RotatingDns::restart`] brings it back.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same address.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "rotating_dns.py did not restart on {}",
            self.ip
        );
    }

    /// The query log: one line per query.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("queries.log")).unwrap_or_default()
    }
}

impl Drop for RotatingDns {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `greeter.py`: TCP listeners on one port that each answer with their own address.
#[derive(Debug)]
pub struct Greeters {
    /// The port every listener shares.
    pub port: u16,
    child: Child,
}

impl Greeters {
    /// Listeners on `addresses` (addresses or IPv4 ranges `FIRST-LAST`).
    pub fn start(addresses: &[&str]) -> Self {
        for _ in 0..20 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let mut command = Command::new("python3");
            command
                .arg(fixtures().join("greeter.py"))
                .args(["--port", &port.to_string()])
                .args(addresses);
            if let Some((child, _)) = spawn_listening(command, "greeter.py") {
                return Self { port, child };
            }
        }
        panic!("greeter.py found no free port for {addresses:?}");
    }
}

impl Drop for Greeters {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stub resolver of the fixtures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolver {
    /// glibc `getaddrinfo` (Python's `socket.getaddrinfo`), in a mount namespace whose
    /// resolv.conf names the server; A and AAAA in parallel from one socket.
    Glibc,
    /// musl `getaddrinfo`, statically linked; A and AAAA in parallel, no TCP fallback.
    Musl,
    /// Go's own resolver; A and AAAA from two sockets, EDNS0.
    Go,
    /// BIND's `dig`.
    Dig,
    /// c-ares through pycares.
    Cares,
    /// Node's `dns.Resolver` (its bundled c-ares).
    Node,
}

impl Resolver {
    /// Every resolver.
    pub const ALL: [Self; 6] = [
        Self::Glibc,
        Self::Musl,
        Self::Go,
        Self::Dig,
        Self::Cares,
        Self::Node,
    ];

    /// Runs `rounds` resolve-then-connect rounds for `name` (connecting on `port`) inside
    /// `cgroup`, asking `dns`. `family` is `any`, `4` or `6` (`any` is `4` for the resolvers
    /// that ask one type).
    pub fn run(
        self,
        cgroup: &TestCgroup,
        dns: &RotatingDns,
        name: &str,
        port: u16,
        rounds: u32,
        family: &str,
    ) -> Rounds {
        let mut command = self.command();
        command.args([name, &port.to_string(), &rounds.to_string()]);
        match self {
            Self::Glibc | Self::Musl => {
                command.arg("--resolv-conf").arg(dns.resolv_conf());
            }
            Self::Go | Self::Dig | Self::Cares | Self::Node => {
                command.args(["--server", &dns.ip, "--dns-port", "53"]);
            }
        }
        let family = match (self, family) {
            (Self::Dig | Self::Cares | Self::Node, "any") => "4",
            (_, family) => family,
        };
        command.args(["--family", family]);
        summary_of(command, cgroup, &format!("{self:?} client"))
    }

    /// c-ares sending `count` queries at once on one socket (`template` with `{}` replaced by
    /// 0..count), then connecting to each answer's address on `port`, inside `cgroup`.
    pub fn cares_parallel(
        cgroup: &TestCgroup,
        dns: &RotatingDns,
        template: &str,
        count: u32,
        port: u16,
    ) -> Rounds {
        let mut command = Self::Cares.command();
        command
            .args([template, &port.to_string(), &count.to_string()])
            .args(["--server", &dns.ip, "--dns-port", "53", "--parallel"]);
        summary_of(command, cgroup, "parallel c-ares client")
    }

    fn command(self) -> Command {
        let script = |file: &str| {
            let mut command = Command::new("python3");
            command.arg(fixtures().join(file));
            command
        };
        match self {
            Self::Glibc => script("glibc_client.py"),
            Self::Dig => script("dig_client.py"),
            Self::Cares => script("cares_client.py"),
            Self::Node => {
                let mut command = Command::new("node");
                command.arg(fixtures().join("node_client.js"));
                command
            }
            Self::Musl => Command::new(client_binary("musl_client")),
            Self::Go => Command::new(client_binary("go_client")),
        }
    }
}

/// Runs a fixture in `cgroup` and reads its one-line JSON summary.
fn summary_of<T: serde::de::DeserializeOwned>(
    mut command: Command,
    cgroup: &TestCgroup,
    what: &str,
) -> T {
    cgroup.enter(&mut command);
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("run the {what}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|err| {
        panic!(
            "{what}: {err}; stdout {stdout:?}, stderr {:?}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// What a client saw over its rounds.
#[derive(Debug, serde::Deserialize)]
pub struct Rounds {
    /// Rounds run.
    pub rounds: u32,
    /// Replies by text: `gateway` from the gateway, an address from a greeter reached direct.
    pub replies: BTreeMap<String, u32>,
    /// Failures by text (`resolve: ...`, `connect: ...`, `read: ...`).
    pub errors: BTreeMap<String, u32>,
    /// The distinct first addresses, the ones connected to.
    pub addresses: Vec<String>,
}

impl Rounds {
    /// Rounds that reached the gateway.
    pub fn via_gateway(&self) -> u32 {
        self.replies.get("gateway").copied().unwrap_or(0)
    }

    /// Rounds that reached a greeter directly: leaks.
    pub fn direct(&self) -> u32 {
        self.replies
            .iter()
            .filter(|(reply, _)| *reply != "gateway")
            .map(|(_, n)| n)
            .sum()
    }
}

/// The compiled clients (musl and Go) live here: `target/<profile>/dns-fixtures`.
fn clients_dir() -> PathBuf {
    crate::workspace_bin("dns-fixtures")
}

/// The path of a compiled client, building the clients first if they are missing.
fn client_binary(name: &str) -> PathBuf {
    static BUILT: Mutex<()> = Mutex::new(());
    let _guard = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = clients_dir().join(name);
    if !path.exists() {
        build_clients(&clients_dir()).unwrap_or_else(|err| panic!("{err}"));
    }
    path
}

/// Builds the musl and Go clients into `out` (offline: they use only their standard
/// libraries). `cargo xtask test` runs this before the kernel matrix, whose guests would build
/// them an order of magnitude slower.
pub fn build_clients(out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|err| format!("mkdir {}: {err}", out.display()))?;
    let cache = out.join("go");
    let status = Command::new("musl-gcc")
        .args(["-static", "-O2", "-Wall", "-Wextra", "-o"])
        .arg(out.join("musl_client"))
        .arg(fixtures().join("musl_client.c"))
        .status()
        .map_err(|err| format!("run musl-gcc (package musl-tools): {err}"))?;
    if !status.success() {
        return Err(format!("musl-gcc failed: {status}"));
    }
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(out.join("go_client"))
        .arg(fixtures().join("go_client.go"))
        .env("GOPATH", cache.join("path"))
        .env("GOCACHE", cache.join("cache"))
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .status()
        .map_err(|err| format!("run go (package golang-go): {err}"))?;
    if !status.success() {
        return Err(format!("go build failed: {status}"));
    }
    Ok(())
}

/// What `forge.py` saw: the query it sent and the answers its socket received.
#[derive(Debug, serde::Deserialize)]
pub struct Forged {
    /// The query id.
    pub id: u16,
    /// The querying socket's port.
    pub port: u16,
    /// Each answer received: its source and A records.
    pub received: Vec<serde_json::Value>,
}

/// Runs `forge.py` inside `cgroup`: a query for `name` to `dns`, and an answer forged to
/// itself saying `name` has `address`, sent from the untrusted `127.53.0.251:53` or, with
/// `raw`, from a raw socket posing as the server.
pub fn forge(
    cgroup: &TestCgroup,
    dns: &RotatingDns,
    name: &str,
    address: &str,
    raw: bool,
) -> Forged {
    let mut command = Command::new("python3");
    command
        .arg(fixtures().join("forge.py"))
        .args(["--server", &dns.ip, "--name", name, "--answer", address]);
    if raw {
        command.arg("--raw");
    } else {
        command.args(["--from-addr", "127.53.0.251"]);
    }
    summary_of(command, cgroup, "forge.py")
}
