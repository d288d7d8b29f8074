//! Desired map contents, computed purely from an intent and the facts learned at runtime.
//!
//! ```text
//! intent rules ───┐
//! resolved hosts ─┼─► Desired { rules, routes, cgroups, conflicts } ──► reconcile (diff) ──► maps
//! cgroup ids ─────┘
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;

use crate::{
    intent::{RuleIntent, RuleOwner},
    route::{Groups, Mode, RouteMatch, RouteTarget},
};

/// A desired route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    /// Index of the rule (in [`Desired::rules`]) the route belongs to.
    pub rule: usize,
    /// Where it goes.
    pub target: RouteTarget,
    /// The hostnames whose answers brought it in (empty: a static address).
    pub hosts: BTreeSet<String>,
    /// Selection groups it applies to.
    pub groups: Groups,
}

/// Two rules claim the same destination with different targets; the earlier rule wins.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conflict {
    /// The contested destination.
    pub route: RouteMatch,
    /// The rule whose target is installed.
    pub winner: RuleOwner,
    /// The rule that lost.
    pub loser: RuleOwner,
}

/// Everything the maps should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Desired {
    /// Rules (by owner), in priority order.
    pub rules: Vec<RuleOwner>,
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
pub(crate) fn compute(
    rules: &[RuleIntent],
    resolved: &BTreeMap<String, BTreeSet<IpAddr>>,
    selected: &[(u64, Groups)],
    exempt: &[u64],
) -> Desired {
    let mut desired = Desired {
        rules: rules.iter().map(|rule| rule.owner.clone()).collect(),
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
