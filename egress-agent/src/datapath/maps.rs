//! Typed access to the pinned maps of this layout, shared by the engine and the CLI. Keys and
//! values go through [`super::codec`]; every map operation's error names its map.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use aya::maps::{
    Array, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues, lpm_trie::LpmTrie,
};
use egress_common::{
    AddrKey, AddrValue, CgroupEntry, CidrValue, Config, Counters, Label, LabelKey, MARKER_SCOPE,
    PatternValue, ResolvedKey, ResolverKey, TargetKey as RawTargetKey, maps as defs, source, stat,
};
use ipnet::IpNet;

use tracing::debug;

use super::{
    DatapathError, codec, sys,
    table::{Removal, Table, full_or, ignore_missing, open},
};
use crate::{
    bpffs::PinDir,
    route::{AddrEntry, Entry, Target, TargetKey},
};

/// Learned entries by (scope, address).
pub type LearnedEntries = BTreeMap<(u64, IpAddr), AddrEntry>;

/// The pinned maps of this layout, opened.
pub struct Maps {
    config: Array<MapData, Config>,
    cgroups: Table<u64, CgroupEntry>,
    addresses: Table<[u8; 16], AddrValue>,
    learned: Table<AddrKey, AddrValue>,
    cidrs: LpmTrie<MapData, [u8; 16], CidrValue>,
    targets: Table<RawTargetKey, egress_common::Target>,
    patterns: Table<u64, PatternValue>,
    trusted: Table<ResolverKey, u32>,
    counters: PerCpuHashMap<MapData, u32, Counters>,
    stats: PerCpuArray<MapData, u64>,
    labels: Table<LabelKey, Label>,
    resolved: Table<ResolvedKey, u64>,
    /// Possible CPUs: the length of every per-CPU value.
    cpus: usize,
    /// Whether the kernel removes and reads a hash map entry in one step (5.14+); assumed
    /// until it says otherwise.
    take_supported: bool,
}

macro_rules! typed {
    ($pins:expr, $def:expr) => {
        open($pins, $def)?
            .try_into()
            .map_err(DatapathError::map($def.name))?
    };
}

impl Maps {
    /// Opens the maps of this layout pinned under `pins`.
    pub fn open(pins: &PinDir) -> Result<Self, DatapathError> {
        Ok(Self {
            config: typed!(pins, defs::CONFIG),
            cgroups: Table::open(pins, defs::CGROUPS)?,
            addresses: Table::open(pins, defs::ADDRESSES)?,
            learned: Table::open(pins, defs::LEARNED)?,
            cidrs: typed!(pins, defs::CIDRS),
            targets: Table::open(pins, defs::TARGETS)?,
            patterns: Table::open(pins, defs::PATTERNS)?,
            trusted: Table::open(pins, defs::TRUSTED)?,
            counters: typed!(pins, defs::COUNTERS),
            stats: typed!(pins, defs::STATS),
            labels: Table::open(pins, defs::LABELS)?,
            resolved: Table::open(pins, defs::RESOLVED)?,
            cpus: aya::util::nr_cpus()
                .map_err(|(_, source)| DatapathError::PossibleCpus { source })?,
            take_supported: true,
        })
    }

    /// The settings the programs read (all zero before the agent first wrote them).
    pub fn config(&self) -> Result<Config, DatapathError> {
        self.config
            .get(&0, 0)
            .map_err(DatapathError::map(defs::CONFIG.name))
    }

    /// Writes the settings.
    pub fn put_config(&mut self, config: &Config) -> Result<(), DatapathError> {
        self.config
            .set(0, config, 0)
            .map_err(DatapathError::map(defs::CONFIG.name))
    }

    /// Cgroup entries; an entry no agent would write reads as `None`.
    pub fn cgroups(&self) -> Result<BTreeMap<u64, Option<Entry>>, DatapathError> {
        Ok(self
            .cgroups
            .entries()?
            .into_iter()
            .map(|(id, value)| (id, codec::entry_of(value)))
            .collect())
    }

    /// Sets a cgroup entry.
    pub fn put_cgroup(&mut self, id: u64, entry: Entry) -> Result<(), DatapathError> {
        self.cgroups.put(&id, &codec::entry_value(entry))
    }

    /// Removes a cgroup entry.
    pub fn delete_cgroup(&mut self, id: u64) -> Result<(), DatapathError> {
        self.cgroups.delete(&id)
    }

    /// Static and resolved addresses.
    pub fn addresses(&self) -> Result<BTreeMap<IpAddr, AddrEntry>, DatapathError> {
        Ok(self
            .addresses
            .entries()?
            .into_iter()
            .filter_map(|(addr, value)| Some((codec::addr_of(addr), codec::addr_entry_of(&value)?)))
            .collect())
    }

    /// Sets an address.
    pub fn put_address(&mut self, addr: IpAddr, entry: &AddrEntry) -> Result<(), DatapathError> {
        self.addresses
            .put(&codec::addr_bytes(addr), &codec::addr_value(entry))
    }

    /// Removes an address.
    pub fn delete_address(&mut self, addr: IpAddr) -> Result<(), DatapathError> {
        self.addresses.delete(&codec::addr_bytes(addr))
    }

    /// Learned addresses: (scope, address) → entry (markers left out).
    pub fn learned(&self) -> Result<LearnedEntries, DatapathError> {
        Ok(self.learned_and_markers()?.0)
    }

    /// Learned addresses, and the addresses with a marker (some scope learned them; see
    /// `source::MARKER`), from one pass over the map.
    pub fn learned_and_markers(&self) -> Result<(LearnedEntries, BTreeSet<IpAddr>), DatapathError> {
        let mut learned = BTreeMap::new();
        let mut markers = BTreeSet::new();
        for (key, value) in self.learned.entries()? {
            let addr = codec::addr_of(key.addr);
            if key.scope == MARKER_SCOPE {
                markers.insert(addr);
            } else if let Some(entry) = codec::addr_entry_of(&value) {
                learned.insert((key.scope, addr), entry);
            }
        }
        Ok((learned, markers))
    }

    /// Marks an address as learned by some scope.
    pub fn put_marker(&mut self, addr: IpAddr) -> Result<(), DatapathError> {
        let key = AddrKey {
            scope: MARKER_SCOPE,
            addr: codec::addr_bytes(addr),
        };
        let value = AddrValue {
            source: source::MARKER,
            ..AddrValue::default()
        };
        self.learned.put(&key, &value)
    }

    /// Removes an address's marker.
    pub fn delete_marker(&mut self, addr: IpAddr) -> Result<(), DatapathError> {
        self.delete_learned(MARKER_SCOPE, addr)
    }

    /// Stores a learned address (the kernel writes these; the agent carries them across layout
    /// versions).
    pub fn put_learned(
        &mut self,
        scope: u64,
        addr: IpAddr,
        entry: &AddrEntry,
    ) -> Result<(), DatapathError> {
        let key = AddrKey {
            scope,
            addr: codec::addr_bytes(addr),
        };
        self.learned.put(&key, &codec::addr_value(entry))
    }

    /// Removes a learned address if it expired before `now_ns`; returns whether it went.
    ///
    /// An answer may renew the entry at any moment. It is read again right before the removal
    /// (the caller's pass over the map may be old), and removed and read in one step: an entry
    /// renewed in between comes back at once, unless a newer answer already wrote it. Kernels
    /// before 5.14 cannot do that step, and a renewal in the instant between the read and the
    /// removal is lost there (until the next answer).
    pub fn delete_learned_if_expired(
        &mut self,
        scope: u64,
        addr: IpAddr,
        now_ns: u64,
    ) -> Result<bool, DatapathError> {
        let key = AddrKey {
            scope,
            addr: codec::addr_bytes(addr),
        };
        if self
            .learned
            .get(&key)?
            .is_none_or(|value| value.expires_ns >= now_ns)
        {
            return Ok(false);
        }
        if self.take_supported {
            match self
                .learned
                .remove_unless(&key, |value| value.expires_ns >= now_ns)
            {
                Ok(Removal::Kept) => {
                    debug!(scope, %addr, "an answer renewed a learned address as it was removed; kept");
                    return Ok(false);
                }
                // Gone: removed now, lost on the way back (logged), or removed by someone else.
                Ok(Removal::Removed | Removal::Lost | Removal::Absent) => return Ok(true),
                Err(err) if sys::lacks_lookup_and_delete(&err) => {
                    debug!(error = %err, "this kernel cannot remove and read a learned entry in one step (before 5.14); removing by key");
                    self.take_supported = false;
                }
                Err(io_error) => {
                    return Err(DatapathError::map(defs::LEARNED.name)(
                        MapError::SyscallError(aya::sys::SyscallError {
                            call: "bpf_map_lookup_and_delete_elem",
                            io_error,
                        }),
                    ));
                }
            }
        }
        self.learned.delete(&key).map(|()| true)
    }

    /// Removes a learned address.
    pub fn delete_learned(&mut self, scope: u64, addr: IpAddr) -> Result<(), DatapathError> {
        self.learned.delete(&AddrKey {
            scope,
            addr: codec::addr_bytes(addr),
        })
    }

    /// Static prefixes and their sets.
    pub fn cidrs(&self) -> Result<BTreeMap<IpNet, u32>, DatapathError> {
        let mut out = BTreeMap::new();
        for item in &self.cidrs {
            let (key, value) = item.map_err(DatapathError::map(defs::CIDRS.name))?;
            if let Some(net) = codec::cidr_of(&key) {
                out.insert(net, value.set);
            }
        }
        Ok(out)
    }

    /// Sets a prefix's set.
    pub fn put_cidr(&mut self, net: &IpNet, set: u32) -> Result<(), DatapathError> {
        let value = CidrValue { set, reserved: 0 };
        self.cidrs
            .insert(&codec::cidr_key(net), value, 0)
            .map_err(|err| full_or(err, defs::CIDRS))
    }

    /// Removes a prefix.
    pub fn delete_cidr(&mut self, net: &IpNet) -> Result<(), DatapathError> {
        ignore_missing(self.cidrs.remove(&codec::cidr_key(net)))
            .map_err(DatapathError::map(defs::CIDRS.name))
    }

    /// Every target.
    pub fn targets(&self) -> Result<BTreeMap<TargetKey, Target>, DatapathError> {
        Ok(self
            .targets
            .entries()?
            .into_iter()
            .filter_map(|(key, value)| {
                Some((codec::target_key_of(&key)?, codec::target_of(&value)))
            })
            .collect())
    }

    /// Sets a target.
    pub fn put_target(&mut self, key: &TargetKey, target: &Target) -> Result<(), DatapathError> {
        self.targets
            .put(&codec::target_key(key), &codec::target_value(target))
    }

    /// Removes a target.
    pub fn delete_target(&mut self, key: &TargetKey) -> Result<(), DatapathError> {
        self.targets.delete(&codec::target_key(key))
    }

    /// Patterns: name hash → pattern id.
    pub fn patterns(&self) -> Result<BTreeMap<u64, u32>, DatapathError> {
        Ok(self
            .patterns
            .entries()?
            .into_iter()
            .map(|(hash, value)| (hash, value.pattern))
            .collect())
    }

    /// Sets a pattern.
    pub fn put_pattern(&mut self, hash: u64, pattern: u32) -> Result<(), DatapathError> {
        self.patterns.put(
            &hash,
            &PatternValue {
                pattern,
                reserved: 0,
            },
        )
    }

    /// Removes a pattern.
    pub fn delete_pattern(&mut self, hash: u64) -> Result<(), DatapathError> {
        self.patterns.delete(&hash)
    }

    /// Trusted resolvers.
    pub fn trusted(&self) -> Result<Vec<std::net::SocketAddr>, DatapathError> {
        Ok(self
            .trusted
            .entries()?
            .iter()
            .map(|(key, _)| codec::resolver_of(key))
            .collect())
    }

    /// Trusts a resolver.
    pub fn put_trusted(&mut self, resolver: std::net::SocketAddr) -> Result<(), DatapathError> {
        self.trusted.put(&codec::resolver_key(resolver), &0)
    }

    /// Stops trusting a resolver.
    pub fn delete_trusted(&mut self, resolver: std::net::SocketAddr) -> Result<(), DatapathError> {
        self.trusted.delete(&codec::resolver_key(resolver))
    }

    /// Every counter slot, summed over CPUs.
    pub fn counters(&self) -> Result<BTreeMap<u32, Counters>, DatapathError> {
        let mut out = BTreeMap::new();
        for item in &self.counters {
            let (slot, values) = item.map_err(DatapathError::map(defs::COUNTERS.name))?;
            let mut sum = Counters::default();
            for value in values.iter() {
                sum.redirected += value.redirected;
                sum.refused += value.refused;
                sum.family_mismatch += value.family_mismatch;
                sum.reversed += value.reversed;
                sum.unselected += value.unselected;
            }
            out.insert(slot, sum);
        }
        Ok(out)
    }

    /// Creates (or resets to zero) a counter slot.
    pub fn reset_counter(&mut self, slot: u32) -> Result<(), DatapathError> {
        let zeros = PerCpuValues::try_from(vec![Counters::default(); self.cpus])
            .map_err(|source| DatapathError::PossibleCpus { source })?;
        self.counters
            .insert(slot, zeros, 0)
            .map_err(|err| full_or(err, defs::COUNTERS))
    }

    /// Removes a counter slot.
    pub fn delete_counter(&mut self, slot: u32) -> Result<(), DatapathError> {
        ignore_missing(self.counters.remove(&slot)).map_err(DatapathError::map(defs::COUNTERS.name))
    }

    /// The global counters, summed over CPUs, in [`stat::NAMES`] order.
    pub fn stats(&self) -> Result<Vec<(&'static str, u64)>, DatapathError> {
        let mut out = Vec::new();
        for (index, name) in (0..stat::COUNT).zip(stat::NAMES) {
            let values = self
                .stats
                .get(&index, 0)
                .map_err(DatapathError::map(defs::STATS.name))?;
            out.push((name, values.iter().sum()));
        }
        Ok(out)
    }

    /// Labels of one kind, by id.
    pub fn labels(&self, kind: u32) -> Result<BTreeMap<u32, String>, DatapathError> {
        Ok(self
            .labels
            .entries()?
            .into_iter()
            .filter(|(key, _)| key.kind == kind)
            .map(|(key, label)| (key.id, codec::label_of(&label)))
            .collect())
    }

    /// Sets a label.
    pub fn put_label(&mut self, kind: u32, id: u32, text: &str) -> Result<(), DatapathError> {
        self.labels
            .put(&LabelKey { kind, id }, &codec::label_value(text))
    }

    /// Removes a label.
    pub fn delete_label(&mut self, kind: u32, id: u32) -> Result<(), DatapathError> {
        self.labels.delete(&LabelKey { kind, id })
    }

    /// The resolver's answers: (pattern id, address) → when their TTL ends (monotonic ns).
    pub fn resolved(&self) -> Result<BTreeMap<(u32, IpAddr), u64>, DatapathError> {
        Ok(self
            .resolved
            .entries()?
            .into_iter()
            .map(|(key, expires)| ((key.pattern, codec::addr_of(key.addr)), expires))
            .collect())
    }

    /// Records one of the resolver's answers.
    pub fn put_resolved(
        &mut self,
        pattern: u32,
        addr: IpAddr,
        expires_ns: u64,
    ) -> Result<(), DatapathError> {
        self.resolved.put(&resolved_key(pattern, addr), &expires_ns)
    }

    /// Forgets one of the resolver's answers.
    pub fn delete_resolved(&mut self, pattern: u32, addr: IpAddr) -> Result<(), DatapathError> {
        self.resolved.delete(&resolved_key(pattern, addr))
    }

    /// One address's entry (for `explain`).
    pub fn address(&self, addr: IpAddr) -> Result<Option<AddrEntry>, DatapathError> {
        Ok(self
            .addresses
            .get(&codec::addr_bytes(addr))?
            .and_then(|value| codec::addr_entry_of(&value)))
    }
}

fn resolved_key(pattern: u32, addr: IpAddr) -> ResolvedKey {
    ResolvedKey {
        pattern,
        reserved: 0,
        addr: codec::addr_bytes(addr),
    }
}
