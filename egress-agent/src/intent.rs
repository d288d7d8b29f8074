//! What a source wants the datapath to do: the one input type of the engine.
//!
//! Each mode is a source that produces an [`Intent`]: the file source (`file.rs`) from the
//! standalone configuration, the Kubernetes source (`k8s::source`) from watched objects. The
//! engine turns an intent plus the facts it learns at runtime (the DNS engine's answers) into
//! the desired map contents.

use std::{collections::BTreeSet, fmt, net::SocketAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;

use crate::route::{Gateways, Protocol};

/// Everything a source asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Intent {
    /// Where to attach the programs; `None`: the cgroup2 root.
    pub attach: Option<PathBuf>,
    /// Redirect rules, in priority order: on a conflict the first rule wins.
    pub rules: Vec<RuleIntent>,
    /// Cgroups whose tasks (and descendants) are redirected, each by the rules (indices into
    /// `rules`) that select it. A cgroup listed twice gets the union.
    pub selected: Vec<Selection>,
    /// Cgroups whose tasks go direct even inside a selected cgroup (wins over selection).
    pub exempt: Vec<u64>,
    /// Resolver settings for the rules' hostnames.
    pub dns: DnsIntent,
    /// What the source wanted but could not find (cgroups that do not exist yet), for status.
    pub missing: Vec<String>,
}

/// A selected cgroup and the rules that apply to its tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The cgroup id.
    pub cgroup: u64,
    /// Indices into [`Intent::rules`].
    pub rules: BTreeSet<usize>,
}

/// Who a rule belongs to; facts about a rule (conflicts) are reported to it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleOwner {
    /// A rule of the standalone configuration, by name.
    File(String),
    /// An `EgressRedirectPolicy`.
    Policy(PolicyKey),
}

/// Namespace and name of a policy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for RuleOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(name) => f.write_str(name),
            Self::Policy(key) => key.fmt(f),
        }
    }
}

/// One redirect rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleIntent {
    /// Whose rule it is; its display form is the rule's name in the maps and the CLI.
    pub owner: RuleOwner,
    /// The egress gateway, per family. Empty: unknown, so no redirect (or a refusal when
    /// `fail_closed`).
    pub gateways: Gateways,
    /// Hostnames whose addresses are redirected: exact names (resolved by the agent and learned
    /// from answers) and `*.` wildcards (learned only), lower case.
    pub hosts: Vec<String>,
    /// Static addresses and CIDRs.
    pub addresses: Vec<IpNet>,
    /// Refuse connections rather than go direct while the gateway is unknown.
    pub fail_closed: bool,
    /// Refuse QUIC (UDP 443) where TCP 443 is redirected, so HTTP/3 clients fall back to TCP
    /// through the gateway.
    pub refuse_quic: bool,
    /// Ports to redirect.
    pub ports: Vec<PortMap>,
}

/// One port mapping of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMap {
    /// Destination port the application connects to.
    pub port: u16,
    /// Port on the gateway.
    pub gateway_port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

/// Resolver settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsIntent {
    /// Servers, tried in order; empty: the `nameserver`s of /etc/resolv.conf.
    pub servers: Vec<SocketAddr>,
    /// Further resolvers whose answers to workloads are learned (the servers themselves are
    /// always trusted).
    pub trusted: Vec<SocketAddr>,
    /// Learn addresses from the DNS answers selected workloads receive.
    pub learn: bool,
    /// How long an address stays routed after the TTL of its last answer ran out.
    pub grace: Duration,
    /// TTLs below this are raised to it.
    pub min_ttl: Duration,
    /// TTLs above this are lowered to it.
    pub max_ttl: Duration,
    /// Timeout of one query.
    pub timeout: Duration,
}

impl Default for DnsIntent {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            trusted: Vec::new(),
            learn: true,
            grace: Duration::from_mins(5),
            min_ttl: Duration::ZERO,
            max_ttl: Duration::from_hours(24),
            timeout: Duration::from_secs(2),
        }
    }
}
