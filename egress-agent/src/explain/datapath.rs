//! The cgroup half of `explain`: its entry in the maps (or an ancestor's), its class and
//! rules, its learned addresses, and the routes a host's addresses take.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use super::{CgroupLine, ExplainError, Explanation, HostLine, HostPort, LearnedLine};
use crate::{
    bpffs::PinDir,
    cgroupfs::Hierarchy,
    datapath::Maps,
    dns::{Resolution, parse_resolv_conf, resolve},
    inspect::Snapshot,
    route::Entry,
};

/// Explains the cgroup at `path` (and what a connection to `host` would do).
pub async fn explain_cgroup(
    pins: &PinDir,
    hierarchy: &Hierarchy,
    path: &Path,
    host: Option<&HostPort>,
    dns_servers: &[SocketAddr],
) -> Result<Explanation, ExplainError> {
    let maps = Maps::open(pins)?;
    let snapshot = Snapshot::read(&maps, Some(hierarchy))?;
    let path = hierarchy.resolve(path)?;
    let id = hierarchy.id_of(&path)?;
    // The innermost entry among the cgroup and its ancestors decides, as in the datapath.
    let mut entry = None;
    let mut dir = Some(path.as_path());
    let root_components = hierarchy.mount().components().count();
    while let Some(current) = dir.filter(|d| d.starts_with(hierarchy.mount())) {
        // The datapath examines only the first MAX_CGROUP_DEPTH levels from the root.
        let level = current.components().count() - root_components;
        if level >= egress_common::limits::MAX_CGROUP_DEPTH as usize {
            dir = current.parent();
            continue;
        }
        if let Ok(current_id) = hierarchy.id_of(current)
            && let Some(found) = snapshot.entry(current_id)
        {
            entry = Some((current_id, current.to_owned(), found));
            break;
        }
        dir = current.parent();
    }
    let relative = |p: &Path| {
        p.strip_prefix(hierarchy.mount())
            .map_or_else(|_| p.display().to_string(), |r| format!("/{}", r.display()))
    };
    let (mode, class, scope) = match entry {
        Some((scope, _, Entry::Selected(class))) => ("selected", Some(class), Some(scope)),
        Some((_, _, Entry::Exempt)) => ("exempt", None, None),
        None => ("none", None, None),
    };
    let cgroup = CgroupLine {
        path: relative(&path),
        id,
        mode: mode.to_owned(),
        entry: entry.as_ref().map(|(_, p, _)| relative(p)),
        class,
        rules: class
            .map(|c| snapshot.rules_of_class(c))
            .unwrap_or_default(),
    };
    let learned: Vec<LearnedLine> = scope
        .map(|s| snapshot.learned_by(s))
        .unwrap_or_default()
        .into_iter()
        .map(|(address, host, expires)| LearnedLine {
            address: address.to_string(),
            host,
            expires_in_secs: Some(expires),
        })
        .collect();
    let host = match host {
        Some(host) => {
            Some(explain_host(&snapshot, &cgroup, scope, &learned, host, dns_servers).await)
        }
        None => None,
    };
    Ok(Explanation {
        cgroup: Some(cgroup),
        host,
        learned,
        ..Explanation::default()
    })
}

/// What a connection from the cgroup to `host` would do.
async fn explain_host(
    snapshot: &Snapshot,
    cgroup: &CgroupLine,
    scope: Option<u64>,
    learned: &[LearnedLine],
    host: &HostPort,
    dns_servers: &[SocketAddr],
) -> HostLine {
    let (mut addresses, resolve_error) = addresses_of(&host.host, dns_servers).await;
    for line in learned {
        let matches = line.host.as_deref().is_some_and(|pattern| {
            pattern == host.host
                || pattern
                    .strip_prefix("*.")
                    .is_some_and(|suffix| host.host.ends_with(&format!(".{suffix}")))
        });
        if let Ok(address) = line.address.parse::<IpAddr>()
            && matches
            && !addresses.contains(&address)
        {
            addresses.push(address);
        }
    }
    let all_routes = cgroup
        .class
        .map(|class| snapshot.routes_to(class, &addresses, scope))
        .unwrap_or_default();
    let routes: Vec<_> = all_routes
        .iter()
        .filter(|r| host.port.is_none_or(|p| r.port == p))
        .cloned()
        .collect();
    let verdict = verdict(cgroup, host, &addresses, &all_routes, &routes);
    HostLine {
        host: host.host.clone(),
        port: host.port,
        addresses: addresses.iter().map(ToString::to_string).collect(),
        resolve_error,
        routes,
        verdict,
    }
}

fn verdict(
    cgroup: &CgroupLine,
    host: &HostPort,
    addresses: &[IpAddr],
    all_routes: &[crate::inspect::RouteRow],
    routes: &[crate::inspect::RouteRow],
) -> String {
    let name = &host.host;
    match cgroup.mode.as_str() {
        "exempt" => return format!("the cgroup is exempt: connections to {name} go direct"),
        "none" => {
            return format!("the cgroup is not selected: connections to {name} go direct");
        }
        _ => {}
    }
    if addresses.is_empty() {
        return format!(
            "{name} has no address (it does not resolve here and nothing was learned): nothing to route"
        );
    }
    if routes.is_empty() {
        if all_routes.is_empty() {
            return format!(
                "no rule of this cgroup's class (rules: {}) routes {name}'s addresses: connections go direct",
                if cgroup.rules.is_empty() {
                    "none".to_owned()
                } else {
                    cgroup.rules.join(", ")
                }
            );
        }
        let mut ports: Vec<String> = all_routes
            .iter()
            .map(|r| format!("{}/{}", r.port, r.protocol))
            .collect();
        ports.dedup();
        return format!(
            "{name} is routed only on {}: port {} goes direct",
            ports.join(", "),
            host.port.unwrap_or(0)
        );
    }
    let mut outcomes: Vec<String> = routes
        .iter()
        .map(|r| match &r.gateway {
            Some(_) => format!(
                "{}/{} → {}:{} (rule {})",
                r.port,
                r.protocol,
                r.gateways.join(" or "),
                r.gateway_port,
                r.rule
            ),
            None => format!(
                "{}/{} refused ({}, rule {})",
                r.port,
                r.protocol,
                match r.refusal {
                    Some(crate::route::Refusal::Quic) => "QUIC, so HTTP/3 falls back to TCP",
                    _ => "fail-closed: the gateway has no address",
                },
                r.rule
            ),
        })
        .collect();
    outcomes.sort();
    outcomes.dedup();
    format!("connections to {name}: {}", outcomes.join("; "))
}

/// The host's addresses as the agent would resolve it (`servers`, else resolv.conf's).
async fn addresses_of(host: &str, servers: &[SocketAddr]) -> (Vec<IpAddr>, Option<String>) {
    if let Ok(address) = host.parse::<IpAddr>() {
        return (vec![address], None);
    }
    let servers: Vec<SocketAddr> = if servers.is_empty() {
        std::fs::read_to_string("/etc/resolv.conf")
            .map(|text| parse_resolv_conf(&text))
            .unwrap_or_default()
    } else {
        servers.to_vec()
    };
    match resolve(&servers, host, Duration::from_secs(2)).await {
        Ok(Resolution::Addresses(found)) => (found.into_keys().collect(), None),
        Ok(Resolution::NxDomain(_)) => (Vec::new(), Some("NXDOMAIN".to_owned())),
        Ok(Resolution::NoData(_)) => (Vec::new(), Some("no A or AAAA records".to_owned())),
        Err(err) => (Vec::new(), Some(err.to_string())),
    }
}
