//! `egress-agent explain`: why a pod (or a cgroup) is or is not redirected, and what a
//! connection to a host would do.
//!
//! * Kubernetes: `explain NAMESPACE/POD [HOST[:PORT]]` reads the pod, its namespace and the
//!   policies from the API, evaluates them with the agent's own index (so the reasons are the
//!   agent's), and finds the pod's cgroup on this node.
//! * Standalone: `explain --cgroup PATH [HOST[:PORT]]`.
//!
//! Either way the cgroup's entry, class, routes and learned addresses come from the pinned
//! maps, and a host is resolved as the agent resolves it.

mod cluster;
mod datapath;
mod render;

use std::net::IpAddr;

use serde::Serialize;

pub use cluster::explain_pod;
pub use datapath::explain_cgroup;
pub use render::render;

/// `egress-agent explain`: the rendered explanation.
pub async fn run(args: crate::cli::ExplainArgs) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let hierarchy = match &args.cgroup_root {
        Some(root) => crate::cgroupfs::Hierarchy::new(root.clone()),
        None => crate::cgroupfs::Hierarchy::discover().context("finding the cgroup2 hierarchy")?,
    };
    let pins = crate::bpffs::PinDir::new(args.pins.bpffs_dir.clone());
    let (pod, host) = match (&args.cgroup, args.targets.as_slice()) {
        (Some(_), [host]) => (None, Some(host)),
        (Some(_), []) => (None, None),
        (None, [pod]) => (Some(pod), None),
        (None, [pod, host]) => (Some(pod), Some(host)),
        _ => anyhow::bail!(
            "usage: explain NAMESPACE/POD [HOST[:PORT]], or explain --cgroup PATH [HOST[:PORT]]"
        ),
    };
    let host: Option<HostPort> = host
        .map(|h| h.parse())
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let servers = &args.dns_servers;
    let explanation = match (&args.cgroup, pod) {
        (Some(cgroup), _) => {
            explain_cgroup(&pins, &hierarchy, cgroup, host.as_ref(), servers).await?
        }
        (None, Some(pod)) => {
            let client = crate::k8s::source::client(args.cluster.kubeconfig.as_deref()).await?;
            let settings = crate::k8s::index::IndexSettings {
                trusted_namespaces: crate::cli::namespaces(&args.cluster.trusted_namespaces),
                cluster_dns: None,
            };
            let (pins, hierarchy, host) = (&pins, &hierarchy, host.as_ref());
            explain_pod(client, settings, pins, hierarchy, pod, host, servers).await?
        }
        (None, None) => unreachable!("checked above"),
    };
    Ok(render(&explanation, args.output))
}

/// Errors explaining.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The pinned maps could not be read.
    #[error(transparent)]
    Datapath(#[from] crate::datapath::DatapathError),
    /// The cgroup does not exist or has no id.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroupfs::CgroupError),
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The pod is not `namespace/name` or does not exist.
    #[error("{0}")]
    Pod(String),
}

/// `HOST[:PORT]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// A hostname or an address.
    pub host: String,
    /// A port, if given.
    pub port: Option<u16>,
}

impl std::str::FromStr for HostPort {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.parse::<IpAddr>().is_ok() {
            return Ok(Self {
                host: text.to_owned(),
                port: None,
            });
        }
        match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') || host.starts_with('[') => Ok(Self {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port: Some(port.parse().map_err(|_| format!("bad port in {text:?}"))?),
            }),
            _ => Ok(Self {
                host: text.to_owned(),
                port: None,
            }),
        }
    }
}

/// Everything `explain` found.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// The pod (Kubernetes mode).
    pub pod: Option<PodLine>,
    /// Each policy's verdict on the pod (Kubernetes mode), oldest first.
    pub policies: Vec<PolicyLine>,
    /// The cgroup and what the maps say about it; `None` when it was not found.
    pub cgroup: Option<CgroupLine>,
    /// The host asked about.
    pub host: Option<HostLine>,
    /// Addresses learned from DNS answers by the cgroup's selected entry.
    pub learned: Vec<LearnedLine>,
}

/// The pod.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodLine {
    /// `namespace/name`.
    pub name: String,
    /// API UID.
    pub uid: String,
    /// The UID its cgroup is named with (differs for static pods).
    pub cgroup_uid: String,
    /// Its labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Its namespace's labels.
    pub namespace_labels: std::collections::BTreeMap<String, String>,
}

/// One policy's verdict on the pod.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyLine {
    /// `namespace/name`.
    pub policy: String,
    /// Whether the policy is accepted.
    pub accepted: bool,
    /// Whether it redirects the pod.
    pub selects: bool,
    /// Why, in words.
    pub why: String,
}

/// The cgroup as the maps see it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CgroupLine {
    /// Its path under the cgroup2 mount.
    pub path: String,
    /// Its id.
    pub id: u64,
    /// `selected`, `exempt` or `none`: the innermost entry among it and its ancestors.
    pub mode: crate::inspect::Mode,
    /// The cgroup whose entry applies (itself or an ancestor).
    pub entry: Option<String>,
    /// The routing class (selected only).
    pub class: Option<u32>,
    /// The rules of that class.
    pub rules: Vec<String>,
}

/// What a connection to the host would do.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostLine {
    /// The host.
    pub host: String,
    /// The port asked about.
    pub port: Option<u16>,
    /// Its addresses (resolved now, and learned by this cgroup).
    pub addresses: Vec<String>,
    /// Why resolution failed, if it did.
    pub resolve_error: Option<String>,
    /// The routes of this cgroup's class for those addresses (and port): every entry that
    /// holds them, whether or not it is the one that decides.
    pub routes: Vec<crate::inspect::RouteRow>,
    /// What the connect hook does, address by address: the entry that decides, as the kernel
    /// picks it.
    pub decisions: Vec<DecisionLine>,
    /// The conclusion, in words.
    pub verdict: String,
}

/// What the connect hook does with connections to one address on one port, from some kinds
/// of socket.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionLine {
    /// The address.
    pub address: IpAddr,
    /// The protocol.
    pub protocol: crate::route::Protocol,
    /// The port.
    pub port: u16,
    /// The sockets this applies to.
    pub sockets: Vec<crate::inspect::SocketKind>,
    /// What happens.
    pub outcome: crate::inspect::Outcome,
    /// The rule that decided, by name.
    pub rule: Option<String>,
}

impl DecisionLine {
    /// In words.
    pub fn describe(&self) -> String {
        use crate::inspect::{Outcome, RefuseReason, SocketKind, Via};
        let via = |via: &Via| match via {
            Via::Learned => "learned from DNS by this pod".to_owned(),
            Via::Address => "the address's own entry".to_owned(),
            Via::Prefix(net) => format!("prefix {net}"),
        };
        let rule = self.rule.as_deref().unwrap_or("-");
        let what = match &self.outcome {
            Outcome::NotRouted => "direct (no rule routes it)".to_owned(),
            Outcome::NoTarget { via: Some(v) } => {
                format!("direct ({} has no rule of this class here)", via(v))
            }
            Outcome::NoTarget { via: None } => "direct (only another pod learned it)".to_owned(),
            Outcome::Redirect {
                via: v,
                gateway,
                gateway_port,
                ..
            } => {
                let gateway = std::net::SocketAddr::new(*gateway, *gateway_port);
                format!("→ {gateway} (rule {rule}, by {})", via(v))
            }
            Outcome::Refuse { via: v, reason, .. } => {
                let reason = match reason {
                    RefuseReason::FailClosed => "fail-closed: the gateway has no address",
                    RefuseReason::Quic => "QUIC, so HTTP/3 falls back to TCP",
                    RefuseReason::FamilyMismatch => "the gateway has no address of this family",
                };
                format!("refused ({reason}; rule {rule}, by {})", via(v))
            }
        };
        let sockets = if SocketKind::for_destination(self.address) == self.sockets.as_slice() {
            String::new()
        } else {
            let names: Vec<&str> = self
                .sockets
                .iter()
                .map(|s| match s {
                    SocketKind::Ipv4 => "IPv4",
                    SocketKind::DualStack => "dual-stack IPv6",
                    SocketKind::V6Only => "IPV6_V6ONLY",
                })
                .collect();
            format!(" from {} sockets", names.join(" and "))
        };
        let destination = std::net::SocketAddr::new(self.address, self.port);
        format!("{destination}/{}{sockets} {what}", self.protocol)
    }
}

/// An address learned by the cgroup.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LearnedLine {
    /// The address.
    pub address: String,
    /// The hostname pattern it was learned for.
    pub host: Option<String>,
    /// Seconds until it leaves the routes.
    pub expires_in_secs: Option<f64>,
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
