//! Carrying kernel-written state over from an older map layout, before the new programs
//! replace the old ones (which keep running on their own maps until then).
//!
//! * Layout 1 (maps directly under `maps/`): its hostname routes are the addresses its resolver
//!   had found. They come back as resolved addresses of their hostname (the first one their
//!   label names), so a new agent that cannot reach DNS keeps routing them for the grace
//!   period. Everything else in layout 1 derives from the configuration. Reverse translations
//!   of connections made before the upgrade are not carried over (they lived in an LRU keyed by
//!   socket cookie, which socket storage cannot be filled from).
//! * Layout 2 differs from layout 3 only in the socket storage (64 pending DNS query ids per
//!   socket instead of 8), so this binary reads its maps as its own ([`previous_layout`]): the
//!   agent prefers its ids, seeds its resolver from its `RESOLVED`, and copies what its
//!   programs learned ([`carry_learned`]) before the new programs attach and again right before
//!   its pins go. Sockets opened before the upgrade lose their storage: their reverse
//!   translations (the peer name of a redirected connection, the source of a redirected UDP
//!   socket's replies) and their pending query ids.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData, lpm_trie::LpmTrie};
use tracing::{info, warn};

use super::{DatapathError, Maps};
use crate::bpffs::PinDir;

/// The older layout whose maps this binary opens as its own (every map it opens kept its
/// definition; only the socket storage, which it never opens, changed).
const READABLE: u32 = 2;

/// The previous layout's maps, when they are pinned and this binary can read them. Best
/// effort: maps an old agent left incomplete (it died creating them, or their removal was
/// interrupted) are passed over with a warning rather than stopping the upgrade.
pub fn previous_layout(pins: &PinDir) -> Option<Maps> {
    if !pins.other_versions().contains(&READABLE) {
        return None;
    }
    Maps::open(&pins.at_layout(READABLE))
        .inspect_err(|err| {
            warn!(error = %err, layout = READABLE, "cannot read the previous layout's maps; nothing carried over from them");
        })
        .ok()
}

/// Copies what the previous layout's programs learned (scoped entries, then their markers)
/// into this layout's maps: an entry the new layout lacks, or holds for the same set with an
/// earlier expiry (what the new programs learned since is never overwritten). Returns how
/// many entries it wrote.
pub fn carry_learned(pins: &PinDir) -> Result<usize, DatapathError> {
    let Some(old) = previous_layout(pins) else {
        return Ok(0);
    };
    let mut new = Maps::open(pins)?;
    let current = new.learned()?;
    let (learned, markers) = old.learned_and_markers()?;
    let mut written = 0;
    for ((scope, addr), entry) in &learned {
        let stale = current
            .get(&(*scope, *addr))
            .is_none_or(|known| known.set == entry.set && known.expires_ns < entry.expires_ns);
        if stale {
            new.put_learned(*scope, *addr, entry)?;
            written += 1;
        }
    }
    let (_, present) = new.learned_and_markers()?;
    for addr in learned.keys().map(|(_, addr)| addr).chain(&markers) {
        if !present.contains(addr) {
            new.put_marker(*addr)?;
        }
    }
    if written > 0 {
        info!(
            entries = written,
            from = READABLE,
            "carried learned addresses over from the previous map layout"
        );
    }
    Ok(written)
}

/// What an older layout knew that the new one cannot derive: hostname → addresses.
pub type Carried = BTreeMap<String, Vec<IpAddr>>;

/// Reads what the older layouts pinned under `pins` know.
pub fn carry_over(pins: &PinDir) -> Result<Carried, DatapathError> {
    let mut carried = Carried::new();
    for version in pins.other_versions() {
        if version == 1 {
            layout_1(pins, &mut carried)?;
        }
    }
    if !carried.is_empty() {
        info!(
            hostnames = carried.len(),
            addresses = carried.values().map(Vec::len).sum::<usize>(),
            "carrying resolved addresses over from the previous map layout"
        );
    }
    Ok(carried)
}

fn migrate_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Migrate {
        version: 1,
        map,
        source: Box::new(source),
    }
}

fn open_v1(pins: &PinDir, name: &'static str) -> Result<Option<Map>, DatapathError> {
    let path = pins.version(1).join(name);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path).map_err(migrate_error(name))?;
    Map::from_map_data(data)
        .map(Some)
        .map_err(migrate_error(name))
}

/// Layout 1: `ROUTES_V4`/`ROUTES_V6` (LPM keys `proto, reserved, port_be, addr`; values with
/// the route id at byte 24) and `ROUTE_HOSTS` (route id → `first-host +N`).
fn layout_1(pins: &PinDir, carried: &mut Carried) -> Result<(), DatapathError> {
    let Some(hosts) = open_v1(pins, "ROUTE_HOSTS")? else {
        return Ok(());
    };
    let hosts: BpfHashMap<MapData, u32, [u8; 256]> =
        hosts.try_into().map_err(migrate_error("ROUTE_HOSTS"))?;
    let mut host_of: BTreeMap<u32, String> = BTreeMap::new();
    for item in &hosts {
        let (route_id, label) = item.map_err(migrate_error("ROUTE_HOSTS"))?;
        let end = label.iter().position(|b| *b == 0).unwrap_or(label.len());
        let text = String::from_utf8_lossy(&label[..end]).into_owned();
        if let Some(first) = text.split(" +").next().filter(|h| !h.is_empty()) {
            host_of.insert(route_id, first.to_owned());
        }
    }
    let route_id =
        |value: &[u8; 32]| u32::from_ne_bytes([value[24], value[25], value[26], value[27]]);
    let mut add = |id: u32, addr: IpAddr| {
        if let Some(host) = host_of.get(&id) {
            let addresses = carried.entry(host.clone()).or_default();
            if !addresses.contains(&addr) {
                addresses.push(addr);
            }
        }
    };
    if let Some(map) = open_v1(pins, "ROUTES_V4")? {
        let routes: LpmTrie<MapData, [u8; 8], [u8; 32]> =
            map.try_into().map_err(migrate_error("ROUTES_V4"))?;
        for item in &routes {
            let (key, value) = item.map_err(migrate_error("ROUTES_V4"))?;
            let data = key.data();
            let addr = Ipv4Addr::new(data[4], data[5], data[6], data[7]);
            add(route_id(&value), IpAddr::V4(addr));
        }
    }
    if let Some(map) = open_v1(pins, "ROUTES_V6")? {
        let routes: LpmTrie<MapData, [u8; 20], [u8; 32]> =
            map.try_into().map_err(migrate_error("ROUTES_V6"))?;
        for item in &routes {
            let (key, value) = item.map_err(migrate_error("ROUTES_V6"))?;
            let data = key.data();
            let mut octets = [0; 16];
            octets.copy_from_slice(&data[4..20]);
            add(route_id(&value), IpAddr::V6(Ipv6Addr::from(octets)));
        }
    }
    Ok(())
}
