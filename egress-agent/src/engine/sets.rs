//! Destinations and their sets: which hostnames and rules' static addresses each address and
//! prefix stands for, each combination stored once (a million addresses of one rule share one
//! set), and the labels people see for them.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;

use super::desired::Facts;
use crate::intent::RuleIntent;

/// A destination a set can contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Member {
    /// A hostname pattern, by pattern id.
    Pattern(u32),
    /// A rule's static addresses of one prefix length (in the IPv6 space: an IPv4 /24 is 120),
    /// by rule index.
    Static(usize, u8),
}

impl Member {
    /// How specific the member is, as a prefix length in the IPv6 space: a hostname or an exact
    /// address is 128. Where a class gets a set from several members, the most specific decides
    /// (a longest-prefix match); equally specific ones go by rule order.
    pub(crate) const fn specificity(self) -> u8 {
        match self {
            Self::Pattern(_) => 128,
            Self::Static(_, len) => len,
        }
    }
}

/// A prefix's length in the IPv6 space.
pub(crate) fn specificity(net: &IpNet) -> u8 {
    match net {
        IpNet::V4(v4) => 96 + v4.prefix_len(),
        IpNet::V6(v6) => v6.prefix_len(),
    }
}

/// Every address and prefix with the members it stands for.
pub(crate) struct Destinations {
    /// The member sets, each stored once.
    pub(crate) interned: Interner,
    /// Exact address → (index into `interned.sets`, latest leave time in monotonic ns).
    pub(crate) exact: BTreeMap<IpAddr, (usize, u64)>,
    /// Prefix → its members (including those of wider prefixes that contain it).
    pub(crate) prefixes: BTreeMap<IpNet, BTreeSet<Member>>,
}

impl Destinations {
    /// The destinations of `rules` and the resolved addresses in `facts`.
    pub(crate) fn of(
        rules: &[RuleIntent],
        facts: &Facts,
        pattern_ids: &BTreeMap<String, u32>,
    ) -> Self {
        // Which destinations each address and prefix stands for. Member sets are interned: a
        // million addresses of one rule share one.
        let mut interned = Interner::default();
        let mut exact: BTreeMap<IpAddr, (usize, u64)> = BTreeMap::new();
        let mut prefixes: BTreeMap<IpNet, BTreeSet<Member>> = BTreeMap::new();
        for (index, rule) in rules.iter().enumerate() {
            for net in &rule.addresses {
                if net.prefix_len() == net.max_prefix_len() {
                    interned.add(&mut exact, net.addr(), Member::Static(index, 128), 0);
                } else {
                    prefixes
                        .entry(*net)
                        .or_default()
                        .insert(Member::Static(index, specificity(net)));
                }
            }
        }
        for (host, addresses) in &facts.resolved {
            let Some(id) = pattern_ids.get(host) else {
                continue;
            };
            for (addr, leaves_ns) in addresses {
                interned.add(&mut exact, *addr, Member::Pattern(*id), *leaves_ns);
            }
        }
        // A longest-prefix match sees one prefix: it stands for every prefix that contains it, and
        // an exact address for every prefix that contains the address.
        let wider = prefixes.clone();
        let lengths: BTreeSet<u8> = wider.keys().map(IpNet::prefix_len).collect();
        for (net, members) in &mut prefixes {
            for other in containing(&wider, &lengths, net.addr(), net.prefix_len()) {
                members.extend(&wider[&other]);
            }
        }
        if !wider.is_empty() {
            for (addr, (set, _)) in &mut exact {
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let outer = containing(&wider, &lengths, *addr, max + 1);
                if !outer.is_empty() {
                    let mut members = interned.sets[*set].clone();
                    for net in outer {
                        members.extend(&wider[&net]);
                    }
                    *set = interned.intern(members);
                }
            }
        }

        Self {
            interned,
            exact,
            prefixes,
        }
    }
}

/// The prefixes of `prefixes` shorter than `below` that contain `addr` (one lookup per prefix
/// length in use).
fn containing(
    prefixes: &BTreeMap<IpNet, BTreeSet<Member>>,
    lengths: &BTreeSet<u8>,
    addr: IpAddr,
    below: u8,
) -> Vec<IpNet> {
    lengths
        .range(..below)
        .filter_map(|len| IpNet::new(addr, *len).ok().map(|net| net.trunc()))
        .filter(|net| prefixes.contains_key(net))
        .collect()
}

/// Member sets, each stored once.
#[derive(Default)]
pub(crate) struct Interner {
    pub(crate) sets: Vec<BTreeSet<Member>>,
    index: BTreeMap<BTreeSet<Member>, usize>,
}

impl Interner {
    pub(crate) fn intern(&mut self, members: BTreeSet<Member>) -> usize {
        if let Some(index) = self.index.get(&members) {
            return *index;
        }
        self.sets.push(members.clone());
        self.index.insert(members, self.sets.len() - 1);
        self.sets.len() - 1
    }

    /// Adds `member` to the set of `addr`, keeping the latest expiry.
    fn add(
        &mut self,
        exact: &mut BTreeMap<IpAddr, (usize, u64)>,
        addr: IpAddr,
        member: Member,
        expires_ns: u64,
    ) {
        let members = match exact.get(&addr) {
            Some((set, _)) if self.sets[*set].contains(&member) => None,
            Some((set, _)) => {
                let mut members = self.sets[*set].clone();
                members.insert(member);
                Some(members)
            }
            None => Some(BTreeSet::from([member])),
        };
        let set = members.map(|m| self.intern(m));
        let entry = exact.entry(addr).or_insert((0, 0));
        if let Some(set) = set {
            entry.0 = set;
        }
        entry.1 = entry.1.max(expires_ns);
    }
}

pub(crate) fn single_pattern(members: &BTreeSet<Member>) -> Option<u32> {
    match members.iter().collect::<Vec<_>>().as_slice() {
        [Member::Pattern(id)] => Some(*id),
        _ => None,
    }
}

/// `first-host +N` for hostname sets; `rule R` for a rule's static addresses.
pub(crate) fn set_label(
    members: &BTreeSet<Member>,
    host_of: &BTreeMap<u32, &str>,
    names: &[String],
) -> String {
    let mut parts: Vec<String> = members
        .iter()
        .map(|member| match member {
            Member::Pattern(id) => host_of
                .get(id)
                .map_or_else(|| format!("#{id}"), |h| (*h).to_owned()),
            Member::Static(index, _) => format!("static:{}", names[*index]),
        })
        .collect();
    parts.sort();
    match parts.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} +{}", rest.len()),
    }
}
