//! A real single-node Kubernetes for the `cluster` suite: etcd, kube-apiserver (RBAC and Node
//! authorization, admission plugins on) and kube-controller-manager, kube-proxy in nftables
//! mode programming the node's NAT, `CoreDNS` behind `kube-system/kube-dns`, and an "internet"
//! network namespace with the external hosts and their authoritative DNS. All of one release,
//! from the binary `cargo xtask test` builds (`tests/cluster`, in `EGRESS_CLUSTER_BIN`).
//!
//! The fixture plays the kubelet and the scheduler (see [`kubelet`]): it binds pods to the node,
//! runs each pod's command in a network namespace and a cgroup of the kubelet's layout, and
//! writes their status. Everything lives under one cgroup (`egk-cluster`) and a few network
//! namespaces (`egk-*`): a run that was killed is cleaned up by the next one.

pub mod apiload;
mod container;
pub mod install;
pub mod kubelet;
pub mod netns;
pub mod origin;
pub mod pki;
mod pod;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::TestCgroup;
use netns::{Netns, check};
use pki::Pki;

/// The node's name.
pub const NODE: &str = "node-1";
/// The prefix of every network namespace and interface the fixture makes.
pub const PREFIX: &str = "egk";
/// The service range.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// Where the DaemonSet's agent pins its programs and maps (its default `--bpffs-dir`).
pub const AGENT_PINS: &str = "/sys/fs/bpf/egress-agent";

/// The pin of the DaemonSet's agent's map `name`, in this build's layout.
pub fn agent_map(name: &str) -> PathBuf {
    Path::new(AGENT_PINS).join(format!("maps/v{}/{name}", egress_common::ABI_VERSION))
}
/// The user whose requests the API server's audit log keeps: the agent's service account.
pub const AUDITED_USER: &str = "system:serviceaccount:egress-agent-system:egress-agent";
/// The cluster DNS Service's ClusterIP.
pub const DNS_SERVICE_IP: &str = "10.96.0.10";

/// The cluster; dropping it stops every process and removes what it made.
pub struct RealCluster {
    /// Logs, data, certificates.
    pub dir: PathBuf,
    /// Certificates and kubeconfigs.
    pub pki: Pki,
    /// The components' binary.
    pub bin: PathBuf,
    /// The Gateway API CRDs.
    pub gateway_crds: PathBuf,
    /// The directory of the workspace's binaries (the agent's, the suite's helpers).
    pub ours: PathBuf,
    /// The node's network namespace.
    pub node: Netns,
    /// The internet's.
    pub internet: Netns,
    /// `egk-cluster`: the node's cgroup root (the agent's cgroup root) holding the pods.
    pub cgroups: kubelet::Cgroups,
    /// The control plane's cgroup, beside the pods'.
    control: TestCgroup,
    /// The control plane's processes.
    processes: Vec<(String, Child)>,
}

/// What the cluster runs.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The components' binary (`tests/cluster`).
    pub cluster: PathBuf,
    /// The Gateway API CRDs.
    pub gateway_crds: PathBuf,
    /// The directory holding `egress-agent` and the suite's helpers.
    pub ours: PathBuf,
}

impl Binaries {
    /// As `cargo xtask test` passes them: `EGRESS_CLUSTER_BIN`, `EGRESS_GATEWAY_API_CRDS`, and
    /// the test's own target directory.
    pub fn from_env() -> Self {
        let agent = crate::agent::agent_bin();
        Self {
            cluster: env_path("EGRESS_CLUSTER_BIN"),
            gateway_crds: env_path("EGRESS_GATEWAY_API_CRDS"),
            ours: agent.parent().expect("a directory").to_owned(),
        }
    }
}

impl RealCluster {
    /// Builds the networks and starts the control plane, kube-proxy and the internet's DNS,
    /// from the binaries `cargo xtask test` passes.
    pub fn start() -> Self {
        Self::start_with(Binaries::from_env())
    }

    /// As [`Self::start`], from `binaries`.
    pub fn start_with(binaries: Binaries) -> Self {
        let Binaries {
            cluster: bin,
            gateway_crds,
            ours,
        } = binaries;
        cleanup_leftovers(&ours);
        let dir = std::env::temp_dir().join(format!("{PREFIX}-cluster"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).expect("mkdir cluster dir");
        let (node, internet) = netns::node_and_internet(PREFIX);
        let cgroups = kubelet::Cgroups::new();
        let control = cgroups.root.child("control-plane");
        let pki = Pki::create(&dir, "https://127.0.0.1:6443");
        let mut cluster = Self {
            dir,
            pki,
            bin,
            gateway_crds,
            ours,
            node,
            internet,
            cgroups,
            control,
            processes: Vec::new(),
        };
        cluster.start_etcd();
        cluster.start_apiserver();
        cluster.start_controller_manager();
        cluster.start_kube_proxy();
        cluster
    }

    fn start_etcd(&mut self) {
        let data = self.dir.join("etcd");
        let args = [
            "etcd".to_owned(),
            format!("--data-dir={}", data.display()),
            "--listen-client-urls=http://127.0.0.1:2379".to_owned(),
            "--advertise-client-urls=http://127.0.0.1:2379".to_owned(),
            "--listen-peer-urls=http://127.0.0.1:2380".to_owned(),
            "--initial-advertise-peer-urls=http://127.0.0.1:2380".to_owned(),
            "--initial-cluster=default=http://127.0.0.1:2380".to_owned(),
            "--unsafe-no-fsync".to_owned(),
        ];
        self.spawn_in_node("etcd", &args);
    }

    fn start_apiserver(&mut self) {
        let p = |name: &str| self.pki.path(name).display().to_string();
        let args = vec![
            "kube-apiserver".to_owned(),
            "--etcd-servers=http://127.0.0.1:2379".to_owned(),
            "--bind-address=0.0.0.0".to_owned(),
            "--secure-port=6443".to_owned(),
            format!("--advertise-address={}", netns::NODE_IP),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--authorization-mode=Node,RBAC".to_owned(),
            // On top of the defaults (ValidatingAdmissionPolicy, ServiceAccount, ...).
            "--enable-admission-plugins=NodeRestriction".to_owned(),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
            "--allow-privileged=true".to_owned(),
            format!("--cert-dir={}", self.dir.join("apiserver-certs").display()),
            // What the agent asks of the server, request by request (`audit_of`).
            format!("--audit-policy-file={}", self.audit_policy().display()),
            format!("--audit-log-path={}", self.log_path("audit").display()),
        ];
        self.spawn_in_node("kube-apiserver", &args);
        self.wait_for(
            "the API server to be ready",
            crate::scaled(Duration::from_secs(90)),
            |c| c.kubectl(&["get", "--raw", "/readyz"]).status.success(),
        );
    }

    /// Logs every request of `AUDITED_USER` (metadata only), nothing else.
    fn audit_policy(&self) -> PathBuf {
        let path = self.dir.join("audit-policy.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: Metadata\n  users: [\"{AUDITED_USER}\"]\n- level: None\n"
            ),
        )
        .expect("write the audit policy");
        path
    }

    /// The audit log's entries (one per request of [`AUDITED_USER`]).
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.log_path("audit"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    fn start_controller_manager(&mut self) {
        let kubeconfig = self.pki.kubeconfig_of("controller-manager");
        let args = vec![
            "kube-controller-manager".to_owned(),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--authentication-kubeconfig={}", kubeconfig.display()),
            format!("--authorization-kubeconfig={}", kubeconfig.display()),
            format!(
                "--service-account-private-key-file={}",
                self.pki.path("sa.key").display()
            ),
            format!("--root-ca-file={}", self.pki.path("ca.crt").display()),
            "--use-service-account-credentials=true".to_owned(),
            "--leader-elect=false".to_owned(),
            "--bind-address=127.0.0.1".to_owned(),
            // No kubelet posts heartbeats: the node lifecycle controller would taint the node
            // and evict its pods. Everything else runs (ServiceAccounts, EndpointSlices,
            // namespaces, garbage collection, Deployments, DaemonSets).
            "--controllers=*,-node-lifecycle-controller,-node-ipam-controller".to_owned(),
        ];
        self.spawn_in_node("kube-controller-manager", &args);
    }

    fn start_kube_proxy(&mut self) {
        let args = vec![
            "kube-proxy".to_owned(),
            format!(
                "--kubeconfig={}",
                self.pki.kubeconfig_of("kube-proxy").display()
            ),
            "--proxy-mode=nftables".to_owned(),
            format!("--hostname-override={NODE}"),
            format!("--cluster-cidr={}", netns::POD_CIDR),
            "--conntrack-max-per-core=0".to_owned(),
            "--metrics-bind-address=127.0.0.1:10249".to_owned(),
            "--healthz-bind-address=127.0.0.1:10256".to_owned(),
        ];
        self.spawn_in_node("kube-proxy", &args);
    }

    /// Starts the fixture's kubelet (and scheduler) for the node.
    pub fn kubelet(&self) -> kubelet::Kubelet {
        kubelet::Kubelet::start(
            kubelet::Context {
                bin: self.bin.clone(),
                ours: self.ours.clone(),
                node_netns: self.node.name.clone(),
                admin: self.pki.kubeconfig_of("admin"),
                node: self.pki.kubeconfig_of("node"),
                ca: self.pki.path("ca.crt"),
                dir: self.dir.clone(),
                kubepods: self.cgroups.kubepods.path().to_owned(),
            },
            &self.cgroups,
        )
    }

    /// Starts `args` (a component of the binary) in the node's namespace and the control
    /// plane's cgroup, logging to `logs/<name>.log`.
    pub fn spawn_in_node(&mut self, name: &str, args: &[String]) {
        let mut command = self.node.command(&self.bin);
        command.args(args);
        let child = self.spawn_logged(name, &mut command);
        self.processes.push((name.to_owned(), child));
    }

    /// Starts `command` in the control plane's cgroup with its output in `logs/<name>.log`.
    pub fn spawn_logged(&self, name: &str, command: &mut Command) -> Child {
        let log = std::fs::File::create(self.log_path(name)).expect("create log");
        self.control.enter(command);
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("start {name}: {err}"))
    }

    /// Where `name`'s output goes.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    /// kubectl as the cluster admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_as("admin", args, None)
    }

    /// kubectl as `identity` (a kubeconfig of [`pki`]), with `stdin` if given; stopped after
    /// 5 minutes (scaled), so a command that waits for what never happens fails the case.
    pub fn kubectl_as(&self, identity: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new("timeout");
        command
            .arg("--kill-after=10")
            .arg(crate::scaled(Duration::from_mins(5)).as_secs().to_string())
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{}", self.node.name))
            .arg("--")
            .arg(&self.bin)
            .arg("kubectl")
            .arg(format!(
                "--kubeconfig={}",
                self.pki.kubeconfig_of(identity).display()
            ))
            .args(args)
            .current_dir(crate::workspace_root());
        run_with_stdin(&mut command, stdin)
    }

    /// kubectl as admin; panics when it fails. Returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        check(&output, &format!("kubectl {}", args.join(" ")));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `kubectl apply --server-side -f -` of `yaml` as admin; panics when it fails.
    pub fn apply(&self, yaml: &str) -> String {
        let output = self.kubectl_as(
            "admin",
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(yaml),
        );
        check(&output, &format!("kubectl apply of\n{yaml}"));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `kubectl get ARGS -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut full = vec!["get"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-o", "json"]);
        let output = self.kubectl(&full);
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// Polls `done` every 200 ms until it holds; panics after `limit` with the logs' tails.
    pub fn wait_for(&self, what: &str, limit: Duration, mut done: impl FnMut(&Self) -> bool) {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if done(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out waiting for {what}\n{}", self.log_tails());
    }

    /// The last lines of every component's log, for failure messages.
    pub fn log_tails(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.dir.join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            let _ = write!(
                text,
                "---- {} ----\n{tail}\n",
                entry.file_name().to_string_lossy()
            );
        }
        text
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        for (_, child) in self.processes.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_cgroup(self.cgroups.root.path());
        uninstall_agent(&self.ours);
    }
}

/// Removes what the cluster's agent pinned, as `deploy/uninstall.yaml` does on a node.
fn uninstall_agent(ours: &Path) {
    if Path::new(AGENT_PINS).exists() {
        let _ = Command::new(ours.join("egress-agent"))
            .args(["uninstall", "--bpffs-dir", AGENT_PINS])
            .output();
    }
}

/// Runs `command`, feeding it `stdin`.
pub fn run_with_stdin(command: &mut Command, stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|err| panic!("start {command:?}: {err}"));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

fn env_path(var: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(
        || {
            panic!(
                "{var} is not set: run the cluster suite with `cargo xtask test --suite cluster`"
            )
        },
        PathBuf::from,
    );
    assert!(path.exists(), "{var}: {} is missing", path.display());
    path
}

/// Kills every process under `root` (cgroup.kill) and removes its cgroups, deepest first.
pub fn kill_cgroup(root: &Path) {
    if !root.exists() {
        return;
    }
    let _ = std::fs::write(root.join("cgroup.kill"), "1");
    let mut dirs = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
        dirs.push(dir);
    }
    for dir in dirs.iter().rev() {
        for _ in 0..50 {
            if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What a killed run may have left: its processes, namespaces and the agent's pins.
fn cleanup_leftovers(ours: &Path) {
    if let Some(mount) = crate::cgroup::cgroup2_mount() {
        kill_cgroup(&mount.join(kubelet::CGROUP_ROOT));
    }
    uninstall_agent(ours);
    let names = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten();
    for entry in names {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{PREFIX}-")) {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}
