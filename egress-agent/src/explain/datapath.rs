//! The cgroup half of `explain`: its entry in the maps (or an ancestor's), its class and
//! rules, its learned addresses, and the routes a host's addresses take.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use super::{CgroupLine, DecisionLine, ExplainError, Explanation, HostLine, HostPort, LearnedLine};
use crate::{
    bpffs::PinDir,
    cgroupfs::Hierarchy,
    datapath::Maps,
    dns::{Resolution, parse_resolv_conf, resolve},
    inspect::{Connection, Mode, Outcome, Snapshot, SocketKind, lookup},
    route::{Entry, Protocol},
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
        Some((scope, _, Entry::Selected(class))) => (Mode::Selected, Some(class), Some(scope)),
        Some((_, _, Entry::Exempt)) => (Mode::Exempt, None, None),
        None => (Mode::None, None, None),
    };
    let cgroup = CgroupLine {
        path: relative(&path),
        id,
        mode,
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
    let decisions = match (cgroup.class, scope) {
        (Some(class), Some(scope)) => decide(snapshot, class, scope, &addresses, host.port),
        _ => Vec::new(),
    };
    let verdict = verdict(cgroup, host, &addresses, &all_routes, &decisions);
    HostLine {
        host: host.host.clone(),
        port: host.port,
        addresses: addresses.iter().map(ToString::to_string).collect(),
        resolve_error,
        routes,
        decisions,
        verdict,
    }
}

/// What the connect hook does with a connection to each address, on `port` (else on every
/// port the class routes), from every kind of socket that can reach it: [`lookup`], the
/// kernel's own precedence.
fn decide(
    snapshot: &Snapshot,
    class: u32,
    scope: u64,
    addresses: &[IpAddr],
    port: Option<u16>,
) -> Vec<DecisionLine> {
    let mut ports: BTreeSet<(Protocol, u16)> = snapshot
        .targets
        .keys()
        .filter(|k| k.class == class && port.is_none_or(|p| k.port == p))
        .map(|k| (k.protocol, k.port))
        .collect();
    if let Some(port) = port {
        ports.insert((Protocol::Tcp, port));
    }
    let mut lines = Vec::new();
    for address in addresses {
        for &(protocol, port) in &ports {
            let mut by_outcome: Vec<(Outcome, Vec<SocketKind>)> = Vec::new();
            for &socket in SocketKind::for_destination(*address) {
                let connection = Connection {
                    class,
                    scope,
                    dest: *address,
                    protocol,
                    port,
                    socket,
                };
                let outcome = lookup(snapshot, &connection);
                match by_outcome.iter_mut().find(|(o, _)| *o == outcome) {
                    Some((_, sockets)) => sockets.push(socket),
                    None => by_outcome.push((outcome, vec![socket])),
                }
            }
            for (outcome, sockets) in by_outcome {
                let rule = match &outcome {
                    Outcome::Redirect { rule, .. } | Outcome::Refuse { rule, .. } => {
                        Some(snapshot.rule_name(*rule))
                    }
                    Outcome::NotRouted | Outcome::NoTarget { .. } => None,
                };
                lines.push(DecisionLine {
                    address: *address,
                    protocol,
                    port,
                    sockets,
                    outcome,
                    rule,
                });
            }
        }
    }
    lines
}

fn verdict(
    cgroup: &CgroupLine,
    host: &HostPort,
    addresses: &[IpAddr],
    all_routes: &[crate::inspect::RouteRow],
    decisions: &[DecisionLine],
) -> String {
    let name = &host.host;
    match cgroup.mode {
        Mode::Exempt => return format!("the cgroup is exempt: connections to {name} go direct"),
        Mode::None | Mode::Unknown => {
            return format!("the cgroup is not selected: connections to {name} go direct");
        }
        Mode::Selected => {}
    }
    if addresses.is_empty() {
        return format!(
            "{name} has no address (it does not resolve here and nothing was learned): nothing to route"
        );
    }
    let acted = decisions
        .iter()
        .any(|d| matches!(d.outcome, Outcome::Redirect { .. } | Outcome::Refuse { .. }));
    if !acted {
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
        ports.sort();
        ports.dedup();
        return format!(
            "{name} is routed only on {}: port {} goes direct",
            ports.join(", "),
            host.port.unwrap_or(0)
        );
    }
    let outcomes: Vec<String> = decisions.iter().map(DecisionLine::describe).collect();
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
