//! Desired map contents, computed from an intent and the facts learned at runtime.
//!
//! ```text
//! rules ─► hostname patterns ─────────────────────────────► PATTERNS (kernel learning)
//!       ─► members: Pattern(host) | Static(rule, len) ─► sets ─► ADDRESSES, CIDRS (address → set)
//! facts (resolved addresses) ─┘                      │
//! selections ─► classes (the rules a cgroup gets) ───┴───► TARGETS (class, set, port → action)
//!            ─► CGROUPS
//! ```
//!
//! * A **set** is the group of destinations an address stands for: a hostname pattern alone
//!   (its id is the pattern's, which is what learned addresses carry), or several (an address
//!   two hostnames share, a rule's static addresses).
//! * A **class** is the list of rules a selected cgroup gets. Each class has its own targets,
//!   so rules only ever steer the cgroups they select, and two rules that claim the same
//!   destination conflict only where they select the same cgroup (the first rule wins there).
//! * Every target has a counter slot per (rule, set); every set has one for unselected tasks.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use egress_common::{FIRST_COMPOSITE_SET, SET_COUNTER, label_kind};
use ipnet::IpNet;

use super::{
    ids::{Exhausted, Ids},
    sets::{Destinations, Member, set_label, single_pattern, specificity},
};
use crate::{
    intent::{Intent, RuleIntent, RuleOwner},
    route::{Action, AddrEntry, Entry, Protocol, Refusal, Source, Target, TargetKey},
};

/// Two rules of one class claim a destination set on a port; the earlier rule wins.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conflict {
    /// The contested destinations (the set's label).
    pub destination: String,
    /// The protocol.
    pub protocol: Protocol,
    /// The port.
    pub port: u16,
    /// The rule whose target is installed.
    pub winner: RuleOwner,
    /// The rule that lost.
    pub loser: RuleOwner,
}

/// What the programs read from `CONFIG`, besides the generation and the seed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Grace after a learned address's TTL, in ns.
    pub(crate) grace_ns: u64,
    /// TTL clamps, in ns.
    pub(crate) min_ttl_ns: u64,
    /// TTL clamps, in ns.
    pub(crate) max_ttl_ns: u64,
    /// The ports DNS answers come from (up to four).
    pub(crate) dns_ports: Vec<u16>,
    /// Learn from DNS answers.
    pub(crate) learn: bool,
    /// Whether `CIDRS` has entries.
    pub(crate) has_cidrs: bool,
}

/// Everything the maps should hold (the agent-written part).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Desired {
    pub(crate) cgroups: BTreeMap<u64, Entry>,
    pub(crate) addresses: BTreeMap<IpAddr, AddrEntry>,
    pub(crate) cidrs: BTreeMap<IpNet, u32>,
    pub(crate) targets: BTreeMap<TargetKey, Target>,
    /// Name hash → pattern id.
    pub(crate) patterns: BTreeMap<u64, u32>,
    pub(crate) trusted: BTreeSet<SocketAddr>,
    /// (label kind, id) → text.
    pub(crate) labels: BTreeMap<(u32, u32), String>,
    /// Counter slots (target slots and `SET_COUNTER | set`).
    pub(crate) counters: BTreeSet<u32>,
    pub(crate) settings: Settings,
    /// Hostname pattern → id (for the resolver's persisted answers).
    pub(crate) pattern_ids: BTreeMap<String, u32>,
    pub(crate) conflicts: Vec<Conflict>,
}

/// What the engine learned at runtime that feeds the desired state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// Exact hostname → its resolved addresses → when each leaves the routes (monotonic ns:
    /// its TTL plus grace).
    pub(crate) resolved: BTreeMap<String, BTreeMap<IpAddr, u64>>,
    /// The DNS servers the resolver uses (resolv.conf's when the intent names none).
    pub(crate) servers: Vec<SocketAddr>,
}

/// The ids the engine keeps across reconciles.
#[derive(Debug)]
pub(crate) struct IdSpace {
    /// Classes of cgroups in the maps before a restart: preferred for those cgroups' classes.
    pub(crate) installed_classes: BTreeMap<u64, u32>,
    pub(crate) rules: Ids<String>,
    pub(crate) patterns: Ids<String>,
    pub(crate) sets: Ids<BTreeSet<Member>>,
    pub(crate) classes: Ids<Vec<String>>,
    pub(crate) slots: Ids<(String, u32)>,
}

impl Default for IdSpace {
    fn default() -> Self {
        Self {
            installed_classes: BTreeMap::new(),
            rules: Ids::new("rules", 1, 1 << 24),
            patterns: Ids::new("hostname patterns", 1, FIRST_COMPOSITE_SET),
            sets: Ids::new("destination sets", FIRST_COMPOSITE_SET, SET_COUNTER),
            classes: Ids::new("routing classes", 1, u32::MAX),
            slots: Ids::new("counter slots", 1, SET_COUNTER),
        }
    }
}

/// Computes the desired state. `seed` keys the pattern hashes.
pub(crate) fn compute(
    intent: &Intent,
    facts: &Facts,
    ids: &mut IdSpace,
    seed: u64,
) -> Result<Desired, Exhausted> {
    let rules = &intent.rules;
    let names: Vec<String> = rules.iter().map(|r| r.owner.to_string()).collect();
    let rule_ids = ids.rules.assign(&names)?;
    let hosts: BTreeSet<String> = rules.iter().flat_map(|r| r.hosts.iter().cloned()).collect();
    let pattern_ids = ids.patterns.assign(&hosts)?;
    let mut desired = Desired {
        pattern_ids: pattern_ids.clone(),
        ..Desired::default()
    };
    for (host, id) in &pattern_ids {
        desired
            .patterns
            .insert(egress_common::name::hash(seed, host), *id);
        desired
            .labels
            .insert((label_kind::PATTERN, *id), host.clone());
    }
    for (name, id) in &rule_ids {
        desired.labels.insert((label_kind::RULE, *id), name.clone());
    }

    let Destinations {
        interned,
        exact,
        prefixes,
    } = Destinations::of(rules, facts, &pattern_ids);

    // Sets: a pattern alone keeps the pattern's id; other combinations are interned.
    let mut all_sets: BTreeSet<BTreeSet<Member>> = exact
        .values()
        .map(|(set, _)| interned.sets[*set].clone())
        .collect();
    all_sets.extend(prefixes.values().cloned());
    for id in pattern_ids.values() {
        all_sets.insert(BTreeSet::from([Member::Pattern(*id)]));
    }
    let composites: Vec<&BTreeSet<Member>> = all_sets
        .iter()
        .filter(|m| single_pattern(m).is_none())
        .collect();
    let composite_ids = ids.sets.assign(composites.iter().copied())?;
    let set_id = |members: &BTreeSet<Member>| {
        single_pattern(members).unwrap_or_else(|| composite_ids[members])
    };
    // Only the interned sets addresses still use (folding replaced some).
    let used: BTreeSet<usize> = exact.values().map(|(set, _)| *set).collect();
    let interned_ids: BTreeMap<usize, (u32, bool)> = used
        .into_iter()
        .map(|index| {
            let members = &interned.sets[index];
            let is_static = members.iter().any(|m| matches!(m, Member::Static(..)));
            (index, (set_id(members), is_static))
        })
        .collect();
    for (addr, (set, expires)) in &exact {
        let (set, is_static) = interned_ids[set];
        desired.addresses.insert(
            *addr,
            AddrEntry {
                set,
                source: if is_static {
                    Source::Static
                } else {
                    Source::Resolved
                },
                expires_ns: if is_static { 0 } else { *expires },
            },
        );
    }
    for (net, members) in &prefixes {
        desired.cidrs.insert(*net, set_id(members));
    }
    let host_of: BTreeMap<u32, &str> = pattern_ids
        .iter()
        .map(|(h, id)| (*id, h.as_str()))
        .collect();
    let mut sets_of_member: BTreeMap<Member, Vec<u32>> = BTreeMap::new();
    for members in &all_sets {
        let id = set_id(members);
        desired
            .labels
            .insert((label_kind::SET, id), set_label(members, &host_of, &names));
        desired.counters.insert(SET_COUNTER | id);
        for member in members {
            sets_of_member.entry(*member).or_default().push(id);
        }
    }

    targets(
        intent,
        &names,
        &rule_ids,
        &pattern_ids,
        &sets_of_member,
        ids,
        &mut desired,
    )?;
    desired.settings = settings(intent, facts, !desired.cidrs.is_empty());
    desired.trusted = facts
        .servers
        .iter()
        .chain(&intent.dns.trusted)
        .copied()
        .collect();
    Ok(desired)
}

/// The classes: each distinct list of rules a selected cgroup gets has one. Writes the cgroup
/// entries; returns each class with its rules.
fn classes(
    intent: &Intent,
    names: &[String],
    ids: &mut IdSpace,
    desired: &mut Desired,
) -> Result<BTreeMap<u32, BTreeSet<usize>>, Exhausted> {
    // The rules of each selected cgroup (a cgroup listed twice gets the union).
    let mut rules_of: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
    for selection in &intent.selected {
        rules_of
            .entry(selection.cgroup)
            .or_default()
            .extend(&selection.rules);
    }
    let exempt: BTreeSet<u64> = intent.exempt.iter().copied().collect();
    rules_of.retain(|cgroup, _| !exempt.contains(cgroup));
    let class_key = |rules: &BTreeSet<usize>| -> Vec<String> {
        rules.iter().map(|i| names[*i].clone()).collect()
    };
    let keys: BTreeSet<Vec<String>> = rules_of.values().map(class_key).collect();
    for (cgroup, rules) in &rules_of {
        if let Some(class) = ids.installed_classes.get(cgroup) {
            ids.classes.prefer(class_key(rules), *class);
        }
    }
    let class_ids = ids.classes.assign(&keys)?;
    let mut classes = BTreeMap::new();
    for (cgroup, rules) in rules_of {
        let class = class_ids[&class_key(&rules)];
        desired.cgroups.insert(cgroup, Entry::Selected(class));
        classes.insert(class, rules);
    }
    for cgroup in exempt {
        desired.cgroups.insert(cgroup, Entry::Exempt);
    }
    Ok(classes)
}

/// Every class's targets.
fn targets(
    intent: &Intent,
    names: &[String],
    rule_ids: &BTreeMap<String, u32>,
    pattern_ids: &BTreeMap<String, u32>,
    sets_of_member: &BTreeMap<Member, Vec<u32>>,
    ids: &mut IdSpace,
    desired: &mut Desired,
) -> Result<(), Exhausted> {
    let classes = classes(intent, names, ids, desired)?;
    // Per target: (specificity, rule index, action). The most specific member wins (a longest
    // prefix match); among equally specific ones the first rule, and the others conflict.
    let mut wanted: BTreeMap<TargetKey, (u8, usize, Action)> = BTreeMap::new();
    let mut conflicts: BTreeSet<Conflict> = BTreeSet::new();
    for (class, rules) in &classes {
        let class = *class;
        // Rules in priority order (the intent's order).
        for index in rules {
            let rule = &intent.rules[*index];
            let Some(action) = action(rule) else {
                continue;
            };
            let statics: BTreeSet<u8> = rule.addresses.iter().map(specificity).collect();
            let members = rule
                .hosts
                .iter()
                .filter_map(|h| pattern_ids.get(h).map(|id| Member::Pattern(*id)))
                .chain(statics.into_iter().map(|len| Member::Static(*index, len)));
            for member in members {
                for set in sets_of_member.get(&member).into_iter().flatten() {
                    for port in &rule.ports {
                        let key = TargetKey {
                            class,
                            set: *set,
                            protocol: port.protocol,
                            port: port.port,
                        };
                        let candidate = (
                            member.specificity(),
                            *index,
                            with_port(action, port.gateway_port),
                        );
                        match wanted.get(&key) {
                            Some((spec, winner, installed)) if *spec == candidate.0 => {
                                if *installed != candidate.2 && winner != index {
                                    conflicts.insert(Conflict {
                                        destination: desired
                                            .labels
                                            .get(&(label_kind::SET, *set))
                                            .cloned()
                                            .unwrap_or_default(),
                                        protocol: port.protocol,
                                        port: port.port,
                                        winner: intent.rules[*winner].owner.clone(),
                                        loser: rule.owner.clone(),
                                    });
                                }
                            }
                            Some((spec, _, _)) if *spec > candidate.0 => {}
                            _ => {
                                wanted.insert(key, candidate);
                            }
                        }
                    }
                }
            }
        }
        refuse_quic(class, intent, &mut wanted);
    }
    let slot_keys: BTreeSet<(String, u32)> = wanted
        .iter()
        .map(|(key, (_, index, _))| (names[*index].clone(), key.set))
        .collect();
    let slots = ids.slots.assign(&slot_keys)?;
    for (key, (_, index, action)) in wanted {
        let slot = slots[&(names[index].clone(), key.set)];
        desired.counters.insert(slot);
        desired.targets.insert(
            key,
            Target {
                action,
                rule: rule_ids[&names[index]],
                counter: slot,
            },
        );
    }
    desired.conflicts = conflicts.into_iter().collect();
    Ok(())
}

/// What a rule does for its destinations (port filled in per port); `None`: nothing (a
/// fail-open rule whose gateway is unknown lets connections go direct).
fn action(rule: &RuleIntent) -> Option<Action> {
    if !rule.gateways.is_empty() {
        Some(Action::Redirect {
            gateways: rule.gateways,
            port: 0,
        })
    } else if rule.fail_closed {
        Some(Action::Refuse(Refusal::FailClosed))
    } else {
        None
    }
}

fn with_port(action: Action, port: u16) -> Action {
    match action {
        Action::Redirect { gateways, .. } => Action::Redirect { gateways, port },
        refuse @ Action::Refuse(_) => refuse,
    }
}

/// Where a class redirects a set on TCP 443 and nothing claims UDP 443, QUIC is refused (when
/// the redirecting rule asks for it), so HTTP/3 falls back to TCP through the gateway.
fn refuse_quic(class: u32, intent: &Intent, wanted: &mut BTreeMap<TargetKey, (u8, usize, Action)>) {
    let quic: Vec<(TargetKey, u8, usize)> = wanted
        .iter()
        .filter(|(key, (_, index, action))| {
            key.class == class
                && key.protocol == Protocol::Tcp
                && key.port == 443
                && matches!(action, Action::Redirect { .. })
                && intent.rules[*index].refuse_quic
        })
        .map(|(key, (spec, index, _))| {
            (
                TargetKey {
                    protocol: Protocol::Udp,
                    ..*key
                },
                *spec,
                *index,
            )
        })
        .collect();
    for (key, spec, index) in quic {
        wanted
            .entry(key)
            .or_insert((spec, index, Action::Refuse(Refusal::Quic)));
    }
}

fn settings(intent: &Intent, facts: &Facts, has_cidrs: bool) -> Settings {
    let ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let mut dns_ports: Vec<u16> = Vec::new();
    for resolver in facts.servers.iter().chain(&intent.dns.trusted) {
        if !dns_ports.contains(&resolver.port())
            && dns_ports.len() < egress_common::limits::DNS_PORTS
        {
            dns_ports.push(resolver.port());
        }
    }
    Settings {
        grace_ns: ns(intent.dns.grace),
        min_ttl_ns: ns(intent.dns.min_ttl),
        max_ttl_ns: ns(intent.dns.max_ttl),
        dns_ports,
        learn: intent.dns.learn,
        has_cidrs,
    }
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
