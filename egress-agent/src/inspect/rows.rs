//! The pinned maps joined into rows people read: every routed address (static, resolved and
//! learned, with where it came from and when it expires) with what each class does with it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use egress_common::{Counters, SET_COUNTER, label_kind};
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    cgroupfs::Hierarchy,
    clock,
    datapath::{DatapathError, Maps},
    route::{Action, AddrEntry, Entry, Protocol, Refusal, Source, Target, TargetKey},
};

/// What a cgroup's entry (or its absence) makes of its tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Selected: its connections are redirected by its class's rules.
    Selected,
    /// Exempt: its connections go direct (a gateway's own pods).
    Exempt,
    /// An entry this binary cannot read.
    Unknown,
    /// No entry applies (`explain` only).
    None,
}

impl Mode {
    /// As the CLI prints it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Selected => "selected",
            Self::Exempt => "exempt",
            Self::Unknown => "unknown",
            Self::None => "none",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a route does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteAction {
    /// Rewritten to the gateway.
    Redirect,
    /// Refused (`EPERM`).
    Refuse,
}

impl RouteAction {
    /// As the CLI prints it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Redirect => "redirect",
            Self::Refuse => "refuse",
        }
    }
}

/// One route in `maps routes -o json`: an address (or prefix) and what one class does with it
/// on one port.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRow {
    /// Address or CIDR.
    pub destination: String,
    /// Destination port.
    pub port: u16,
    /// `TCP` or `UDP`.
    pub protocol: Protocol,
    /// The gateway address (IPv4 when there is one); null when refused.
    pub gateway: Option<String>,
    /// Every gateway address (one per family).
    pub gateways: Vec<String>,
    /// Gateway port.
    pub gateway_port: u16,
    /// Refused because the rule is fail-closed and its gateway is unknown.
    pub fail_closed: bool,
    /// `redirect` or `refuse`.
    pub action: RouteAction,
    /// Why it is refused (`failClosed`, `quic`); null when redirected.
    pub refusal: Option<Refusal>,
    /// Rule name.
    pub rule: String,
    /// The hostname(s) behind the address (`name +N` when N more); null for a static address.
    pub host: Option<String>,
    /// `static`, `resolved` or `learned`.
    pub source: Source,
    /// For a learned address, the selected cgroup that learned it (only its tasks use it).
    pub cgroup: Option<String>,
    /// The routing class (the rules a selected cgroup gets).
    pub class: u32,
    /// Seconds until the address may leave the routes (TTL plus grace); null: never.
    pub expires_in_secs: Option<f64>,
    /// Connections and datagrams redirected for this rule and destination set.
    pub redirects: u64,
    /// Refused for this rule and destination set.
    pub refused: u64,
}

/// One cgroup in `maps cgroups -o json`.
#[derive(Debug, Serialize)]
pub struct CgroupRow {
    /// Cgroup id (inode number).
    pub id: u64,
    /// Path relative to the cgroup2 mount; null when the cgroup no longer exists.
    pub path: Option<String>,
    /// `selected`, `exempt` or `unknown`.
    pub mode: Mode,
    /// The routing class of a selected cgroup (0 for exempt).
    pub class: u32,
}

/// Everything the rows are made from, read once.
#[derive(Default)]
pub struct Snapshot {
    pub(crate) addresses: BTreeMap<IpAddr, AddrEntry>,
    pub(crate) cidrs: BTreeMap<IpNet, u32>,
    pub(crate) learned: BTreeMap<(u64, IpAddr), AddrEntry>,
    /// Addresses some scope learned (the kernel's markers).
    pub(crate) markers: BTreeSet<IpAddr>,
    /// The datapath's `config_flags`.
    pub(crate) flags: u32,
    pub(crate) targets: BTreeMap<TargetKey, Target>,
    pub(crate) cgroups: BTreeMap<u64, Option<Entry>>,
    pub(crate) counters: BTreeMap<u32, Counters>,
    pub(crate) rules: BTreeMap<u32, String>,
    pub(crate) sets: BTreeMap<u32, String>,
    pub(crate) paths: BTreeMap<u64, String>,
}

impl Snapshot {
    /// Reads the maps (and, for paths, the cgroup hierarchy).
    pub fn read(maps: &Maps, hierarchy: Option<&Hierarchy>) -> Result<Self, DatapathError> {
        let (learned, markers) = maps.learned_and_markers()?;
        Ok(Self {
            addresses: maps.addresses()?,
            cidrs: maps.cidrs()?,
            learned,
            markers,
            flags: maps.config()?.flags,
            targets: maps.targets()?,
            cgroups: maps.cgroups()?,
            counters: maps.counters()?,
            rules: maps.labels(label_kind::RULE)?,
            sets: maps.labels(label_kind::SET)?,
            paths: hierarchy
                .map(Hierarchy::paths_by_id)
                .unwrap_or_default()
                .into_iter()
                .collect(),
        })
    }

    /// The targets of a set, by class.
    fn targets_of(&self, set: u32) -> impl Iterator<Item = (&TargetKey, &Target)> {
        self.targets.iter().filter(move |(key, _)| key.set == set)
    }

    /// Route rows: global addresses and prefixes for every class that routes them, learned
    /// ones for their scope's class; sorted by rule, destination, port.
    pub fn routes(&self) -> Vec<RouteRow> {
        let now = clock::monotonic_ns();
        let mut rows = Vec::new();
        // Exact addresses print as prefixes (`/32`, `/128`), like the static CIDRs.
        for (addr, entry) in &self.addresses {
            for (key, target) in self.targets_of(entry.set) {
                rows.push(self.row(
                    IpNet::from(*addr).to_string(),
                    entry,
                    None,
                    key,
                    target,
                    now,
                ));
            }
        }
        for (net, set) in &self.cidrs {
            let entry = AddrEntry {
                set: *set,
                source: Source::Static,
                expires_ns: 0,
            };
            for (key, target) in self.targets_of(*set) {
                rows.push(self.row(net.to_string(), &entry, None, key, target, now));
            }
        }
        for ((scope, addr), entry) in &self.learned {
            let class = match self.cgroups.get(scope) {
                Some(Some(Entry::Selected(class))) => *class,
                _ => continue,
            };
            for (key, target) in self.targets_of(entry.set).filter(|(k, _)| k.class == class) {
                rows.push(self.row(
                    IpNet::from(*addr).to_string(),
                    entry,
                    Some(*scope),
                    key,
                    target,
                    now,
                ));
            }
        }
        rows.sort_by(|a, b| {
            (&a.rule, &a.destination, a.port, &a.protocol).cmp(&(
                &b.rule,
                &b.destination,
                b.port,
                &b.protocol,
            ))
        });
        rows
    }

    fn row(
        &self,
        destination: String,
        entry: &AddrEntry,
        scope: Option<u64>,
        key: &TargetKey,
        target: &Target,
        now: u64,
    ) -> RouteRow {
        let counters = self
            .counters
            .get(&target.counter)
            .copied()
            .unwrap_or_default();
        let (gateways, gateway_port, refusal) = match target.action {
            Action::Redirect { gateways, port } => (gateways.addresses(), port, None),
            Action::Refuse(reason) => (Vec::new(), 0, Some(reason)),
        };
        let expires_in_secs =
            (entry.expires_ns != 0).then(|| clock::secs_until(entry.expires_ns, now));
        RouteRow {
            destination,
            port: key.port,
            protocol: key.protocol,
            gateway: gateways.first().map(ToString::to_string),
            gateways: gateways.iter().map(ToString::to_string).collect(),
            gateway_port,
            fail_closed: refusal == Some(Refusal::FailClosed),
            action: if refusal.is_some() {
                RouteAction::Refuse
            } else {
                RouteAction::Redirect
            },
            refusal,
            rule: self
                .rules
                .get(&target.rule)
                .cloned()
                .unwrap_or_else(|| format!("#{}", target.rule)),
            host: self
                .sets
                .get(&entry.set)
                .filter(|label| !label.starts_with("static:"))
                .cloned(),
            source: entry.source,
            cgroup: scope.map(|id| {
                self.paths
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| id.to_string())
            }),
            class: key.class,
            expires_in_secs,
            redirects: counters.redirected,
            refused: counters.refused,
        }
    }

    /// The rows of one class for some addresses: their exact entries, the prefixes holding
    /// them, and what `scope` learned for them.
    pub fn routes_to(&self, class: u32, addresses: &[IpAddr], scope: Option<u64>) -> Vec<RouteRow> {
        let now = clock::monotonic_ns();
        let mut rows = Vec::new();
        let mut push = |destination: String, entry: &AddrEntry, learned_by: Option<u64>| {
            for (key, target) in self.targets_of(entry.set).filter(|(k, _)| k.class == class) {
                rows.push(self.row(destination.clone(), entry, learned_by, key, target, now));
            }
        };
        for addr in addresses {
            if let Some(entry) = self.addresses.get(addr) {
                push(IpNet::from(*addr).to_string(), entry, None);
            }
            for (net, set) in self.cidrs.iter().filter(|(net, _)| net.contains(addr)) {
                let entry = AddrEntry {
                    set: *set,
                    source: Source::Static,
                    expires_ns: 0,
                };
                push(net.to_string(), &entry, None);
            }
            if let Some(scope) = scope
                && let Some(entry) = self.learned.get(&(scope, *addr))
            {
                push(IpNet::from(*addr).to_string(), entry, Some(scope));
            }
        }
        rows
    }

    /// A rule's name (`#id` when it has no label).
    pub fn rule_name(&self, id: u32) -> String {
        self.rules
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("#{id}"))
    }

    /// The rule names of a class.
    pub fn rules_of_class(&self, class: u32) -> Vec<String> {
        let ids: BTreeSet<u32> = self
            .targets
            .iter()
            .filter(|(key, _)| key.class == class)
            .map(|(_, target)| target.rule)
            .collect();
        ids.iter()
            .map(|id| {
                self.rules
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| format!("#{id}"))
            })
            .collect()
    }

    /// What a scope learned: (address, hostname pattern, seconds to expiry).
    pub fn learned_by(&self, scope: u64) -> Vec<(IpAddr, Option<String>, f64)> {
        let now = clock::monotonic_ns();
        self.learned
            .iter()
            .filter(|((s, _), _)| *s == scope)
            .map(|((_, addr), entry)| {
                (
                    *addr,
                    self.sets.get(&entry.set).cloned(),
                    clock::secs_until(entry.expires_ns, now),
                )
            })
            .collect()
    }

    /// The cgroup entry, if any.
    pub fn entry(&self, id: u64) -> Option<Entry> {
        self.cgroups.get(&id).copied().flatten()
    }

    /// Cgroup rows.
    pub fn cgroups(&self) -> Vec<CgroupRow> {
        self.cgroups
            .iter()
            .map(|(id, entry)| CgroupRow {
                id: *id,
                path: self.paths.get(id).cloned(),
                mode: match entry {
                    Some(Entry::Selected(_)) => Mode::Selected,
                    Some(Entry::Exempt) => Mode::Exempt,
                    None => Mode::Unknown,
                },
                class: match entry {
                    Some(Entry::Selected(class)) => *class,
                    _ => 0,
                },
            })
            .collect()
    }

    /// Per-set counts of connections from unselected tasks, by set label.
    pub fn unselected(&self) -> BTreeMap<String, u64> {
        self.counters
            .iter()
            .filter(|(slot, c)| **slot & SET_COUNTER != 0 && c.unselected > 0)
            .map(|(slot, c)| {
                let set = slot & !SET_COUNTER;
                let label = self
                    .sets
                    .get(&set)
                    .cloned()
                    .unwrap_or_else(|| format!("#{set}"));
                (label, c.unselected)
            })
            .collect()
    }
}
