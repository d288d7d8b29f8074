//! Command-line interface.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default pin directory.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/egress-agent";

/// Redirects selected workloads' connections to an egress gateway with eBPF.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "EGRESS_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: attach the programs and keep the maps in sync with the config.
    Run(Box<RunArgs>),
    /// Show the pinned maps (works while the agent is down).
    Maps(MapsArgs),
    /// Detach the programs and remove every pinned object.
    Uninstall(PinArgs),
    /// Show the running agent's state: config, conflicts, hostnames and their addresses.
    Status(StatusArgs),
    /// Explain why a pod (Kubernetes) or a cgroup (standalone) is or is not redirected, and
    /// what a connection to a host would do.
    Explain(Box<ExplainArgs>),
    /// Print the `EgressRedirectPolicy` CustomResourceDefinition (YAML).
    Crd,
    /// Mount bpffs at /sys/fs/bpf unless it is mounted already (the DaemonSet's init
    /// container; needs `CAP_SYS_ADMIN`).
    MountBpffs {
        /// Where.
        #[arg(long, default_value = "/sys/fs/bpf")]
        at: PathBuf,
    },
    /// Check that this kernel runs the datapath: load every program (nothing is attached or
    /// pinned) and report what the verifier said.
    Preflight,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's admin endpoint.
    #[arg(long, default_value = crate::admin::DEFAULT_ADMIN_ADDR, env = "EGRESS_ADMIN_ADDR")]
    pub admin_addr: std::net::SocketAddr,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// `NAMESPACE/POD [HOST[:PORT]]` in Kubernetes mode, or `[HOST[:PORT]]` with `--cgroup`.
    #[arg(value_name = "TARGET", num_args = 0..=2)]
    pub targets: Vec<String>,
    /// Standalone: the cgroup (a path under the cgroup2 mount, or absolute).
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// DNS servers to resolve the host with (`ip` or `ip:port`, repeatable); default:
    /// /etc/resolv.conf's, as the agent does.
    #[arg(long = "dns-server")]
    pub dns_servers: Vec<std::net::SocketAddr>,
    /// How to reach the cluster, and whom it trusts (as for `run`).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The host's cgroup2 hierarchy; default: found in /proc/self/mountinfo.
    #[arg(long, env = "EGRESS_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Pin directory.
    #[command(flatten)]
    pub pins: PinArgs,
}

/// Kubernetes mode: the API server, and the namespaces trusted to select across namespaces.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Kubernetes mode: a kubeconfig file; default: in-cluster config (or `$KUBECONFIG`).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes mode: a namespace whose policies may select pods in other namespaces (the
    /// platform team's gateway namespace); repeatable, or comma-separated in the environment.
    /// Policies elsewhere select only in their own namespace.
    #[arg(
        long = "trusted-namespace",
        env = "EGRESS_TRUSTED_NAMESPACES",
        value_delimiter = ','
    )]
    pub trusted_namespaces: Vec<String>,
}

/// Where the pinned objects live.
#[derive(Debug, Args)]
pub struct PinArgs {
    /// Directory on bpffs for pinned maps and links.
    #[arg(long, default_value = DEFAULT_BPFFS_DIR, env = "EGRESS_BPFFS_DIR")]
    pub bpffs_dir: PathBuf,
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Standalone configuration file (YAML), reloaded on SIGHUP and when it changes. Without
    /// it the agent runs in Kubernetes mode.
    #[arg(long, env = "EGRESS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kubernetes mode: this node's name (the downward API's `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// How to reach the cluster, and whom it trusts.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Kubernetes mode: DNS servers for hostnames (`ip` or `ip:port`, repeatable); default: the
    /// agent's /etc/resolv.conf.
    #[arg(long = "dns-server")]
    pub dns_servers: Vec<std::net::SocketAddr>,
    /// Kubernetes mode: the cluster DNS Service (`namespace/name`); answers from its ClusterIPs
    /// and endpoints to selected pods are learned. `none` turns it off.
    #[arg(long, default_value = "kube-system/kube-dns")]
    pub cluster_dns: String,
    /// Kubernetes mode: a node-local DNS cache address whose answers are learned too
    /// (repeatable; for example 169.254.20.10).
    #[arg(long = "node-local-dns")]
    pub node_local_dns: Vec<std::net::IpAddr>,
    /// Kubernetes mode: the namespace of the Lease that elects the one agent writing policy
    /// status and Events (the agent's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "egress-agent-system")]
    pub lease_namespace: String,
    /// Kubernetes mode: where the kubelet creates pod cgroups, relative to the cgroup2 root
    /// (its `cgroupRoot`, say `kubepods.slice` or `kubelet.slice`); repeatable. Default: the
    /// whole hierarchy is searched.
    #[arg(long = "kubelet-cgroup-root")]
    pub kubelet_cgroup_roots: Vec<PathBuf>,
    /// Kubernetes mode: list in pages of this many objects with consistent reads; 0 (the
    /// default) lists from the API server's watch cache in one response, as the kubelet does.
    #[arg(long, default_value_t = 0)]
    pub list_page_size: u32,
    /// Address of the metrics endpoint (`/metrics`, `/live`, `/ready`; read-only); `off`
    /// disables it. In a pod: the pod IP.
    #[arg(long, default_value = "off", env = "EGRESS_METRICS_ADDR", value_parser = parse_listen)]
    pub metrics_addr: Listen,
    /// The host's cgroup2 hierarchy; default: the first cgroup2 mount in /proc/self/mountinfo.
    /// In a pod, mount the host's hierarchy and point here: the container's own
    /// `/sys/fs/cgroup` is its cgroup namespace's view.
    #[arg(long, env = "EGRESS_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,
    /// Pin directory.
    #[command(flatten)]
    pub pins: PinArgs,
    /// How often cgroups are looked up again and the maps re-checked (hostnames follow their
    /// TTLs).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub resync_interval: Duration,
    /// Address of the admin endpoint (`/live`, `/ready`, `/status`); `off` disables it.
    #[arg(
        long,
        default_value = crate::admin::DEFAULT_ADMIN_ADDR,
        env = "EGRESS_ADMIN_ADDR",
        value_parser = parse_listen
    )]
    pub admin_addr: Listen,
}

/// Where an endpoint listens: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// Not served.
    Off,
    /// Served at this address.
    At(std::net::SocketAddr),
}

/// `ADDR:PORT` (`[IPv6]:PORT`), or `off`.
fn parse_listen(text: &str) -> Result<Listen, String> {
    if text == "off" {
        return Ok(Listen::Off);
    }
    text.parse()
        .map(Listen::At)
        .map_err(|err| format!("{err}: use ADDR:PORT, [IPv6]:PORT or off"))
}

/// `maps`.
#[derive(Debug, Args)]
pub struct MapsArgs {
    /// Which map.
    #[arg(value_enum)]
    pub which: MapsView,
    /// The host's cgroup2 hierarchy, for cgroup paths; default: found in /proc/self/mountinfo.
    #[arg(long, env = "EGRESS_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Pin directory.
    #[command(flatten)]
    pub pins: PinArgs,
}

/// A view of the maps.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MapsView {
    /// Routes: destination, port, protocol, gateway, rule and redirect count.
    Routes,
    /// Cgroups: path, id, selected or exempt.
    Cgroups,
    /// Global counters and attachments.
    Stats,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns, like kubectl.
    Table,
    /// Stable JSON (see docs/cli.md).
    Json,
}

/// Log format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

pub use crate::config::parse_duration;

/// A namespace list from repeated flags or a comma-separated environment variable, spaces
/// around names ignored.
pub fn namespaces(values: &[String]) -> std::collections::BTreeSet<String> {
    values
        .iter()
        .map(|ns| ns.trim())
        .filter(|ns| !ns.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
