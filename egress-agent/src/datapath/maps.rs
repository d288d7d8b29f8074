//! Typed access to the pinned maps, shared by the agent and the CLI.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::{
    HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues,
    lpm_trie::{Key, LpmTrie},
};
use egress_common::{
    CgroupMode, HostLabel, RouteKey4, RouteKey6, RouteValue, RuleName, limits, map_names,
    route_flags, stat, v4_mapped, v4_unmapped,
};
use ipnet::IpNet;

use super::DatapathError;
use crate::{
    bpffs::PinDir,
    config::Protocol,
    desired::{RouteMatch, RouteTarget},
};

/// The pinned maps, opened.
pub struct Maps {
    routes_v4: LpmTrie<MapData, RouteKey4, RouteValue>,
    routes_v6: LpmTrie<MapData, RouteKey6, RouteValue>,
    cgroups: BpfHashMap<MapData, u64, CgroupMode>,
    route_stats: PerCpuHashMap<MapData, u32, u64>,
    stats: PerCpuArray<MapData, u64>,
    rule_names: BpfHashMap<MapData, u32, RuleName>,
    route_hosts: BpfHashMap<MapData, u32, HostLabel>,
    /// Possible CPUs: the length of every per-CPU value.
    cpus: usize,
}

/// A route as stored: what it matches and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// What it matches.
    pub route: RouteMatch,
    /// The stored value (gateway, ids).
    pub value: RouteValue,
}

impl RouteEntry {
    /// The stored target.
    pub fn target(&self) -> RouteTarget {
        let gateway = self.value.has_gateway().then(|| {
            let addr = Ipv6Addr::from(self.value.gateway);
            match v4_unmapped(&self.value.gateway) {
                Some(v4) if self.value.flags & route_flags::GATEWAY_V4 != 0 => {
                    IpAddr::V4(Ipv4Addr::from(v4))
                }
                _ => IpAddr::V6(addr),
            }
        });
        RouteTarget {
            gateway,
            gateway_port: u16::from_be(self.value.gateway_port_be),
            fail_closed: self.value.flags & route_flags::FAIL_CLOSED != 0,
        }
    }
}

/// The map value for a target, with its ids and selection groups.
pub fn route_value(target: &RouteTarget, rule_id: u32, route_id: u32, groups: u32) -> RouteValue {
    let mut flags = 0;
    if target.fail_closed {
        flags |= route_flags::FAIL_CLOSED;
    }
    let gateway = match target.gateway {
        Some(IpAddr::V4(v4)) => {
            flags |= route_flags::GATEWAY_V4;
            v4_mapped(v4.octets())
        }
        Some(IpAddr::V6(v6)) => v6.octets(),
        None => [0; 16],
    };
    RouteValue {
        gateway,
        gateway_port_be: target.gateway_port.to_be(),
        flags,
        rule_id,
        route_id,
        groups,
    }
}

fn open(pins: &PinDir, name: &'static str) -> Result<Map, DatapathError> {
    let path = pins.map(name);
    if !path.exists() {
        return Err(DatapathError::NotInstalled { path: pins.maps() });
    }
    let data = MapData::from_pin(&path).map_err(DatapathError::map(name))?;
    Map::from_map_data(data).map_err(DatapathError::map(name))
}

macro_rules! typed {
    ($pins:expr, $name:expr) => {
        open($pins, $name)?
            .try_into()
            .map_err(DatapathError::map($name))?
    };
}

impl Maps {
    /// Opens the maps pinned under `pins`.
    pub fn open(pins: &PinDir) -> Result<Self, DatapathError> {
        Ok(Self {
            routes_v4: typed!(pins, map_names::ROUTES_V4),
            routes_v6: typed!(pins, map_names::ROUTES_V6),
            cgroups: typed!(pins, map_names::CGROUPS),
            route_stats: typed!(pins, map_names::ROUTE_STATS),
            stats: typed!(pins, map_names::STATS),
            rule_names: typed!(pins, map_names::RULE_NAMES),
            route_hosts: typed!(pins, map_names::ROUTE_HOSTS),
            cpus: aya::util::nr_cpus().map_err(|(_, io_error)| DatapathError::Map {
                map: map_names::ROUTE_STATS,
                source: Box::new(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "nr_cpus",
                    io_error,
                })),
            })?,
        })
    }

    /// Every installed route, IPv4 first.
    pub fn routes(&self) -> Result<Vec<RouteEntry>, DatapathError> {
        let mut entries = Vec::new();
        for item in &self.routes_v4 {
            let (key, value) = item.map_err(DatapathError::map(map_names::ROUTES_V4))?;
            if let Some(route) = route_match(
                key.data().proto,
                key.data().port_be,
                IpAddr::V4(Ipv4Addr::from(key.data().addr)),
                key.prefix_len().saturating_sub(RouteKey4::HEADER_BITS),
            ) {
                entries.push(RouteEntry { route, value });
            }
        }
        for item in &self.routes_v6 {
            let (key, value) = item.map_err(DatapathError::map(map_names::ROUTES_V6))?;
            if let Some(route) = route_match(
                key.data().proto,
                key.data().port_be,
                IpAddr::V6(Ipv6Addr::from(key.data().addr)),
                key.prefix_len().saturating_sub(RouteKey6::HEADER_BITS),
            ) {
                entries.push(RouteEntry { route, value });
            }
        }
        Ok(entries)
    }

    /// Installs or replaces a route.
    pub fn put_route(
        &mut self,
        route: &RouteMatch,
        value: &RouteValue,
    ) -> Result<(), DatapathError> {
        match trie_key(route) {
            TrieKey::V4(key) => self
                .routes_v4
                .insert(&key, value, 0)
                .map_err(|err| full_or(err, map_names::ROUTES_V4, limits::MAX_ROUTES_V4)),
            TrieKey::V6(key) => self
                .routes_v6
                .insert(&key, value, 0)
                .map_err(|err| full_or(err, map_names::ROUTES_V6, limits::MAX_ROUTES_V6)),
        }
    }

    /// Removes a route.
    pub fn delete_route(&mut self, route: &RouteMatch) -> Result<(), DatapathError> {
        match trie_key(route) {
            TrieKey::V4(key) => self
                .routes_v4
                .remove(&key)
                .map_err(DatapathError::map(map_names::ROUTES_V4)),
            TrieKey::V6(key) => self
                .routes_v6
                .remove(&key)
                .map_err(DatapathError::map(map_names::ROUTES_V6)),
        }
    }

    /// Creates (or resets to zero) the counter of a route.
    pub fn reset_route_counter(&mut self, route_id: u32) -> Result<(), DatapathError> {
        let cpus = self.cpus;
        let zeros =
            PerCpuValues::try_from(vec![0_u64; cpus]).map_err(|io_error| DatapathError::Map {
                map: map_names::ROUTE_STATS,
                source: Box::new(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "per-cpu values",
                    io_error,
                })),
            })?;
        self.route_stats
            .insert(route_id, zeros, 0)
            .map_err(DatapathError::map(map_names::ROUTE_STATS))
    }

    /// Removes the counter of a route.
    pub fn delete_route_counter(&mut self, route_id: u32) -> Result<(), DatapathError> {
        ignore_missing(self.route_stats.remove(&route_id))
            .map_err(DatapathError::map(map_names::ROUTE_STATS))
    }

    /// Redirect counts by route id, summed over CPUs.
    pub fn route_counts(&self) -> Result<HashMap<u32, u64>, DatapathError> {
        let mut counts = HashMap::new();
        for item in &self.route_stats {
            let (id, values) = item.map_err(DatapathError::map(map_names::ROUTE_STATS))?;
            counts.insert(id, values.iter().sum());
        }
        Ok(counts)
    }

    /// The global counters, summed over CPUs, in [`stat::NAMES`] order.
    pub fn stats(&self) -> Result<Vec<(&'static str, u64)>, DatapathError> {
        let mut out = Vec::new();
        for (index, name) in (0..stat::COUNT).zip(stat::NAMES) {
            let values = self
                .stats
                .get(&index, 0)
                .map_err(DatapathError::map(map_names::STATS))?;
            out.push((name, values.iter().sum()));
        }
        Ok(out)
    }

    /// Cgroup entries.
    pub fn cgroups(&self) -> Result<BTreeMap<u64, CgroupMode>, DatapathError> {
        let mut out = BTreeMap::new();
        for item in &self.cgroups {
            let (id, mode) = item.map_err(DatapathError::map(map_names::CGROUPS))?;
            out.insert(id, mode);
        }
        Ok(out)
    }

    /// Sets a cgroup entry.
    pub fn put_cgroup(&mut self, id: u64, mode: CgroupMode) -> Result<(), DatapathError> {
        self.cgroups
            .insert(id, mode, 0)
            .map_err(DatapathError::map(map_names::CGROUPS))
    }

    /// Removes a cgroup entry.
    pub fn delete_cgroup(&mut self, id: u64) -> Result<(), DatapathError> {
        ignore_missing(self.cgroups.remove(&id)).map_err(DatapathError::map(map_names::CGROUPS))
    }

    /// Rule names by id.
    pub fn rule_names(&self) -> Result<BTreeMap<u32, String>, DatapathError> {
        let mut out = BTreeMap::new();
        for item in &self.rule_names {
            let (id, name) = item.map_err(DatapathError::map(map_names::RULE_NAMES))?;
            let end = name
                .bytes
                .iter()
                .position(|b| *b == 0)
                .unwrap_or(name.bytes.len());
            out.insert(id, String::from_utf8_lossy(&name.bytes[..end]).into_owned());
        }
        Ok(out)
    }

    /// Sets a rule name (truncated to the field; config validation keeps names short enough).
    pub fn put_rule_name(&mut self, id: u32, name: &str) -> Result<(), DatapathError> {
        let mut value = RuleName::default();
        let len = name.len().min(value.bytes.len() - 1);
        value.bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        self.rule_names
            .insert(id, value, 0)
            .map_err(DatapathError::map(map_names::RULE_NAMES))
    }

    /// Removes a rule name.
    pub fn delete_rule_name(&mut self, id: u32) -> Result<(), DatapathError> {
        ignore_missing(self.rule_names.remove(&id))
            .map_err(DatapathError::map(map_names::RULE_NAMES))
    }
}

impl Maps {
    /// Host labels by route id.
    pub fn host_labels(&self) -> Result<BTreeMap<u32, String>, DatapathError> {
        let mut out = BTreeMap::new();
        for item in &self.route_hosts {
            let (id, label) = item.map_err(DatapathError::map(map_names::ROUTE_HOSTS))?;
            out.insert(id, nul_terminated(&label.bytes));
        }
        Ok(out)
    }

    /// Sets the host label of a route.
    pub fn put_host_label(&mut self, route_id: u32, label: &str) -> Result<(), DatapathError> {
        let mut value = HostLabel::default();
        let len = label.len().min(value.bytes.len() - 1);
        value.bytes[..len].copy_from_slice(&label.as_bytes()[..len]);
        self.route_hosts
            .insert(route_id, value, 0)
            .map_err(DatapathError::map(map_names::ROUTE_HOSTS))
    }

    /// Removes the host label of a route.
    pub fn delete_host_label(&mut self, route_id: u32) -> Result<(), DatapathError> {
        ignore_missing(self.route_hosts.remove(&route_id))
            .map_err(DatapathError::map(map_names::ROUTE_HOSTS))
    }
}

/// The text before the first NUL.
fn nul_terminated(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A route's key in its family's LPM trie: protocol and port in full, then the prefix.
enum TrieKey {
    V4(Key<RouteKey4>),
    V6(Key<RouteKey6>),
}

fn trie_key(route: &RouteMatch) -> TrieKey {
    let proto = route.protocol.number();
    let port_be = route.port.to_be();
    let prefix = u32::from(route.dest.prefix_len());
    match route.dest.addr() {
        IpAddr::V4(addr) => TrieKey::V4(Key::new(
            RouteKey4::HEADER_BITS + prefix,
            RouteKey4 {
                proto,
                reserved: 0,
                port_be,
                addr: addr.octets(),
            },
        )),
        IpAddr::V6(addr) => TrieKey::V6(Key::new(
            RouteKey6::HEADER_BITS + prefix,
            RouteKey6 {
                proto,
                reserved: 0,
                port_be,
                addr: addr.octets(),
            },
        )),
    }
}

fn route_match(proto: u8, port_be: u16, addr: IpAddr, prefix: u32) -> Option<RouteMatch> {
    Some(RouteMatch {
        protocol: Protocol::from_number(proto)?,
        port: u16::from_be(port_be),
        dest: IpNet::new(addr, u8::try_from(prefix).ok()?).ok()?,
    })
}

fn full_or(err: aya::maps::MapError, map: &'static str, capacity: u32) -> DatapathError {
    if let aya::maps::MapError::SyscallError(syscall) = &err
        && matches!(
            syscall.io_error.raw_os_error(),
            Some(libc::ENOSPC | libc::E2BIG)
        )
    {
        return DatapathError::RoutesFull {
            map,
            capacity,
            dropped: 1,
        };
    }
    DatapathError::map(map)(err)
}

fn ignore_missing(result: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(syscall))
            if syscall.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
}
