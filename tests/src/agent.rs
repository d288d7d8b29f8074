//! The real `egress-agent` binary, run in standalone mode for one test.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How long the tests wait for the agent to converge (stretched in slow VMs, see
/// [`crate::scaled`]).
pub fn converge() -> Duration {
    crate::scaled(Duration::from_secs(15))
}

/// The agent binary: `EGRESS_AGENT_BIN`, else from the test's target directory.
pub fn agent_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("EGRESS_AGENT_BIN") {
        return bin.into();
    }
    let bin = crate::workspace_bin("egress-agent");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p egress-agent`) or set EGRESS_AGENT_BIN",
        bin.display()
    );
    bin
}

/// A running agent with its own config file, log file and pin directory. Dropping it stops
/// the process and uninstalls everything it pinned.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    dir: PathBuf,
    /// The pin directory.
    pub bpffs_dir: PathBuf,
    /// Extra arguments for `run`.
    extra_args: Vec<String>,
    /// The admin endpoint.
    pub admin_addr: std::net::SocketAddr,
    /// Kubernetes mode: no config file.
    kubernetes: bool,
    /// Run with only these capabilities (`setpriv` names: `bpf,net_admin`), as the DaemonSet.
    capabilities: Option<String>,
}

impl Agent {
    /// Writes `config` and starts the agent on it.
    pub fn start(config: &str) -> Self {
        Self::start_with(config, &[])
    }

    /// As [`Agent::start`], with extra `run` arguments.
    pub fn start_with(config: &str, extra_args: &[&str]) -> Self {
        let mut agent = Self::prepare(extra_args, false);
        agent.write_config(config);
        agent.spawn();
        agent
    }

    /// An agent with `config` written but not started (fixtures first, then [`Agent::spawn`]).
    pub fn unstarted(config: &str) -> Self {
        let agent = Self::prepare(&[], false);
        agent.write_config(config);
        agent
    }

    /// As [`Agent::start`], with only `capabilities` (comma-separated, `setpriv` names).
    pub fn start_with_capabilities(config: &str, capabilities: &str) -> Self {
        let mut agent = Self::prepare(&[], false);
        agent.capabilities = Some(capabilities.to_owned());
        agent.write_config(config);
        agent.spawn();
        agent
    }

    /// Starts the agent in Kubernetes mode with `args` (node name, kubeconfig, ...).
    pub fn start_kubernetes(args: &[&str]) -> Self {
        let mut agent = Self::prepare(args, true);
        agent.spawn();
        agent
    }

    /// A not yet started agent with its own directory, pin directory and admin port.
    fn prepare(extra_args: &[&str], kubernetes: bool) -> Self {
        let name = crate::unique("agent");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("mkdir {}: {err}", dir.display()));
        Self {
            child: None,
            dir,
            bpffs_dir: PathBuf::from("/sys/fs/bpf").join(name),
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            admin_addr: free_port(),
            kubernetes,
            capabilities: None,
        }
    }

    /// `GET path` on the admin endpoint: (status code, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read as _, Write as _};
        let Ok(mut stream) = std::net::TcpStream::connect(self.admin_addr) else {
            return (0, String::new());
        };
        let _ = write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (
            code,
            response
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default(),
        )
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// Replaces the config file's contents.
    pub fn write_config(&self, config: &str) {
        let path = self.config_path();
        let staged = self.dir.join("config.yaml.new");
        std::fs::write(&staged, config)
            .unwrap_or_else(|err| panic!("write {}: {err}", staged.display()));
        std::fs::rename(&staged, &path)
            .unwrap_or_else(|err| panic!("rename to {}: {err}", path.display()));
    }

    /// Starts the process (again), appending to the same log.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|err| panic!("open log: {err}"));
        let mut command = match &self.capabilities {
            Some(caps) => {
                let set = format!("-all,+{}", caps.replace(',', ",+"));
                let mut command = Command::new("setpriv");
                command
                    .arg("--reuid=0")
                    .arg(format!("--inh-caps={set}"))
                    .arg(format!("--ambient-caps={set}"))
                    .arg(format!("--bounding-set={set}"))
                    .arg(agent_bin());
                command
            }
            None => Command::new(agent_bin()),
        };
        command.arg("run");
        if !self.kubernetes {
            command.arg("--config").arg(self.config_path());
        }
        let child = command
            .arg("--bpffs-dir")
            .arg(&self.bpffs_dir)
            .args(["--resync-interval", "1s"])
            .arg("--admin-addr")
            .arg(self.admin_addr.to_string())
            .args(&self.extra_args)
            .env("EGRESS_LOG", "info,egress_agent=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("start agent: {err}"));
        self.child = Some(child);
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent not running").id()
    }

    /// Sends `signal` to the agent.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child.
        let rc = unsafe { libc::kill(self.pid().try_into().expect("pid"), signal) };
        assert_eq!(rc, 0, "kill({signal}): {}", std::io::Error::last_os_error());
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn stop_with(&mut self, signal: i32) -> std::process::ExitStatus {
        self.signal(signal);
        let mut child = self.child.take().expect("agent not running");
        child
            .wait()
            .unwrap_or_else(|err| panic!("wait agent: {err}"))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().ok().flatten().is_none())
    }

    /// Everything the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + converge();
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent never logged {needle:?}; log:\n{}", self.log());
    }

    /// Runs the agent's CLI with `args` and this agent's pin directory.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(agent_bin())
            .args(args)
            .arg("--bpffs-dir")
            .arg(&self.bpffs_dir)
            .output()
            .unwrap_or_else(|err| panic!("run egress-agent {args:?}: {err}"))
    }

    /// `maps VIEW -o json`, parsed; `None` while the maps are not there yet.
    pub fn maps_json(&self, view: &str) -> Option<serde_json::Value> {
        let output = self.cli(&["maps", view, "-o", "json"]);
        output.status.success().then(|| {
            serde_json::from_slice(&output.stdout)
                .unwrap_or_else(|err| panic!("maps {view} json: {err}"))
        })
    }

    /// The routes as the CLI shows them.
    pub fn routes(&self) -> Vec<serde_json::Value> {
        self.maps_json("routes")
            .and_then(|v| v["routes"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Waits until `done(routes, cgroups)` holds for the CLI's JSON.
    pub fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[serde_json::Value], &[serde_json::Value]) -> bool,
    ) {
        let deadline = Instant::now() + converge();
        while Instant::now() < deadline {
            let cgroups = self
                .maps_json("cgroups")
                .and_then(|v| v["cgroups"].as_array().cloned())
                .unwrap_or_default();
            if done(&self.routes(), &cgroups) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "agent never reached: {what}; routes {:#?}\nlog:\n{}",
            self.routes(),
            self.log()
        );
    }

    /// Waits for exactly `routes` routes and `cgroups` cgroup entries.
    pub fn wait_converged(&self, routes: usize, cgroups: usize) {
        self.wait_until(&format!("{routes} routes and {cgroups} cgroups"), |r, c| {
            r.len() == routes && c.len() == cgroups
        });
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> std::net::SocketAddr {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|err| panic!("bind: {err}"));
    listener
        .local_addr()
        .unwrap_or_else(|err| panic!("local_addr: {err}"))
}

impl Agent {
    /// `status -o json` from the running agent; `None` while it does not answer.
    pub fn status(&self) -> Option<serde_json::Value> {
        let output = Command::new(agent_bin())
            .args(["status", "-o", "json", "--admin-addr"])
            .arg(self.admin_addr.to_string())
            .output()
            .unwrap_or_else(|err| panic!("run egress-agent status: {err}"));
        output.status.success().then(|| {
            serde_json::from_slice(&output.stdout)
                .unwrap_or_else(|err| panic!("status json: {err}"))
        })
    }

    /// The status of one hostname.
    pub fn host_status(&self, host: &str) -> Option<serde_json::Value> {
        self.status()?["hosts"]
            .as_array()?
            .iter()
            .find(|h| h["name"] == host)
            .cloned()
    }

    /// Waits until `done(status)` holds.
    pub fn wait_status(&self, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + converge();
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(status) = self.status() {
                if done(&status) {
                    return;
                }
                last = Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "agent never reached: {what}; last status {last:#?}\nlog:\n{}",
            self.log()
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.bpffs_dir.exists() {
            let _ = self.cli(&["uninstall"]);
        }
        if std::thread::panicking() {
            eprintln!("agent log kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
