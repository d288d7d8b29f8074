//! Desired map contents, computed purely from rules, resolved addresses and cgroup ids.
//!
//! ```text
//! Config rules ──┐
//! resolved hosts ┼─► Desired { rules, routes, cgroups, conflicts } ──► reconcile (diff) ──► maps
//! cgroup ids ────┘
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;

use crate::config::{Protocol, Rule};

/// What a route matches: protocol, destination port and destination prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteMatch {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Destination port.
    pub port: u16,
    /// Destination address or CIDR.
    pub dest: IpNet,
}

/// Where a route sends matching connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteTarget {
    /// The gateway; `None` while unknown.
    pub gateway: Option<IpAddr>,
    /// Port on the gateway.
    pub gateway_port: u16,
    /// Refuse rather than go direct while the gateway is unknown.
    pub fail_closed: bool,
}

/// A desired route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Index of the rule (in [`Desired::rules`]) the route belongs to.
    pub rule: usize,
    /// Where it goes.
    pub target: RouteTarget,
    /// The hostnames whose answers brought it in (empty: a static address).
    pub hosts: BTreeSet<String>,
    /// Selection groups it applies to.
    pub groups: u32,
}

/// Two rules claim the same destination with different targets; the earlier rule wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The contested destination.
    pub route: RouteMatch,
    /// The rule whose target is installed.
    pub winner: String,
    /// The rule that lost.
    pub loser: String,
}

/// Mode of a cgroup entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// Redirected, with descendants, for routes of these selection groups.
    Selected(u32),
    /// Direct, with descendants, even inside a selected cgroup.
    Exempt,
}

impl Mode {
    /// The map value.
    pub const fn value(self) -> egress_common::CgroupMode {
        match self {
            Self::Selected(groups) => egress_common::CgroupMode {
                mode: egress_common::CgroupMode::SELECTED,
                groups,
            },
            Self::Exempt => egress_common::CgroupMode {
                mode: egress_common::CgroupMode::EXEMPT,
                groups: 0,
            },
        }
    }

    /// From the map value.
    pub const fn from_value(value: egress_common::CgroupMode) -> Option<Self> {
        match value.mode {
            egress_common::CgroupMode::SELECTED => Some(Self::Selected(value.groups)),
            egress_common::CgroupMode::EXEMPT => Some(Self::Exempt),
            _ => None,
        }
    }
}

/// Everything the maps should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Rule names, in priority order.
    pub rules: Vec<String>,
    /// Routes by what they match.
    pub routes: BTreeMap<RouteMatch, Route>,
    /// Cgroup entries by cgroup id.
    pub cgroups: BTreeMap<u64, Mode>,
    /// Contested destinations.
    pub conflicts: Vec<Conflict>,
}

/// Computes the desired state.
///
/// * `resolved`: the current addresses of each hostname (missing: not resolved yet).
/// * `selected`: cgroup ids with their selection groups (a cgroup listed twice gets both);
///   `exempt`: cgroup ids. A cgroup in both is exempt (the safe choice).
///
/// Routes of a rule whose gateway is unknown are left out, unless the rule is fail-closed: then
/// they are installed without a gateway, so the datapath refuses those connections.
pub fn compute(
    rules: &[Rule],
    resolved: &BTreeMap<String, BTreeSet<IpAddr>>,
    selected: &[(u64, u32)],
    exempt: &[u64],
) -> Desired {
    let mut desired = Desired {
        rules: rules.iter().map(|rule| rule.name.clone()).collect(),
        ..Desired::default()
    };
    for (index, rule) in rules.iter().enumerate() {
        if rule.gateway.is_none() && !rule.fail_closed {
            continue;
        }
        let mut destinations: BTreeMap<IpNet, BTreeSet<String>> = rule
            .addresses
            .iter()
            .map(|net| (*net, BTreeSet::new()))
            .collect();
        for host in &rule.hosts {
            for addr in resolved.get(host).into_iter().flatten() {
                destinations
                    .entry(IpNet::from(*addr))
                    .or_default()
                    .insert(host.clone());
            }
        }
        for (dest, hosts) in destinations {
            for port in &rule.ports {
                let route = RouteMatch {
                    protocol: port.protocol,
                    port: port.port,
                    dest,
                };
                let target = RouteTarget {
                    gateway: rule.gateway,
                    gateway_port: port.gateway_port,
                    fail_closed: rule.fail_closed,
                };
                let candidate = Route {
                    rule: index,
                    target,
                    hosts: hosts.clone(),
                    groups: rule.groups,
                };
                insert_route(&mut desired, route, candidate);
            }
        }
    }
    for (id, groups) in selected {
        let merged = match desired.cgroups.get(id) {
            Some(Mode::Selected(known)) => known | groups,
            _ => *groups,
        };
        desired.cgroups.insert(*id, Mode::Selected(merged));
    }
    for id in exempt {
        desired.cgroups.insert(*id, Mode::Exempt);
    }
    desired
}

fn insert_route(desired: &mut Desired, route: RouteMatch, candidate: Route) {
    match desired.routes.get(&route) {
        None => {
            desired.routes.insert(route, candidate);
        }
        Some(existing) if existing.target == candidate.target => {
            // Same destination and target from another rule or hostname: one route, and the
            // hostnames that brought it in are all shown.
            if let Some(existing) = desired.routes.get_mut(&route) {
                existing.hosts.extend(candidate.hosts);
                existing.groups |= candidate.groups;
            }
        }
        Some(existing) => {
            let winner_rule = existing.rule;
            // The winner's gateway serves the loser's workloads too: they still go through a
            // gateway rather than direct (which a fail-closed loser would forbid).
            if let Some(winner) = desired.routes.get_mut(&route) {
                winner.groups |= candidate.groups;
            }
            let conflict = Conflict {
                route,
                winner: desired.rules[winner_rule].clone(),
                loser: desired.rules[candidate.rule].clone(),
            };
            if !desired.conflicts.contains(&conflict) {
                desired.conflicts.push(conflict);
            }
        }
    }
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
