//! `egress-agent maps ...`: the pinned maps as tables or JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    bpffs::PinDir,
    cgroupfs::Hierarchy,
    cli::{MapsView, Output},
    datapath::{self, DatapathError, Maps},
    route::Mode,
};

/// One route in `maps routes -o json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRow {
    /// Address or CIDR.
    pub destination: String,
    /// Destination port.
    pub port: u16,
    /// `TCP` or `UDP`.
    pub protocol: String,
    /// Gateway address; null while unknown.
    pub gateway: Option<String>,
    /// Gateway port.
    pub gateway_port: u16,
    /// Refuses connections while the gateway is unknown.
    pub fail_closed: bool,
    /// Rule name.
    pub rule: String,
    /// The hostname that brought the route in (`name +N` when N more did); null for a static
    /// address.
    pub host: Option<String>,
    /// Connections and datagrams redirected by this route.
    pub redirects: u64,
}

/// One cgroup in `maps cgroups -o json`.
#[derive(Debug, Serialize)]
pub struct CgroupRow {
    /// Cgroup id (inode number).
    pub id: u64,
    /// Path relative to the cgroup2 mount; null when the cgroup no longer exists.
    pub path: Option<String>,
    /// `selected` or `exempt`.
    pub mode: String,
    /// Selection groups (bitmask; all ones in standalone mode).
    pub groups: u32,
}

/// Route rows, sorted by rule then destination.
pub fn route_rows(maps: &Maps) -> Result<Vec<RouteRow>, DatapathError> {
    let names = maps.rule_names()?;
    let counts = maps.route_counts()?;
    let hosts = maps.host_labels()?;
    let mut entries = maps.routes()?;
    entries.sort_by_key(|entry| (entry.rule_id, entry.route));
    Ok(entries
        .into_iter()
        .map(|entry| {
            let target = entry.target;
            RouteRow {
                destination: entry.route.dest.to_string(),
                port: entry.route.port,
                protocol: entry.route.protocol.to_string(),
                gateway: target.gateway.map(|g| g.to_string()),
                gateway_port: target.gateway_port,
                fail_closed: target.fail_closed,
                rule: names
                    .get(&entry.rule_id)
                    .cloned()
                    .unwrap_or_else(|| format!("#{}", entry.rule_id)),
                host: hosts.get(&entry.route_id).cloned(),
                redirects: counts.get(&entry.route_id).copied().unwrap_or(0),
            }
        })
        .collect())
}

/// Cgroup rows.
pub fn cgroup_rows(
    maps: &Maps,
    hierarchy: Option<&Hierarchy>,
) -> Result<Vec<CgroupRow>, DatapathError> {
    let paths = hierarchy.map(Hierarchy::paths_by_id).unwrap_or_default();
    Ok(maps
        .cgroups()?
        .into_iter()
        .map(|(id, mode)| CgroupRow {
            id,
            path: paths.get(&id).cloned(),
            mode: match mode {
                Some(Mode::Selected(_)) => "selected",
                Some(Mode::Exempt) => "exempt",
                None => "unknown",
            }
            .to_owned(),
            groups: match mode {
                Some(Mode::Selected(groups)) => groups,
                _ => 0,
            },
        })
        .collect())
}

/// Renders a view.
pub fn render(pins: &PinDir, view: MapsView, output: Output) -> Result<String, DatapathError> {
    let maps = Maps::open(pins)?;
    let json = output == Output::Json;
    let text = match view {
        MapsView::Routes => {
            let rows = route_rows(&maps)?;
            if json {
                to_json(&serde_json::json!({ "routes": rows }))
            } else {
                table(
                    &[
                        "DESTINATION",
                        "PORT",
                        "PROTO",
                        "GATEWAY",
                        "RULE",
                        "HOST",
                        "REDIRECTS",
                    ],
                    rows.iter().map(|r| {
                        let gateway = match &r.gateway {
                            Some(g) if g.contains(':') => format!("[{g}]:{}", r.gateway_port),
                            Some(g) => format!("{g}:{}", r.gateway_port),
                            None if r.fail_closed => "<none> (fail-closed)".to_owned(),
                            None => "<none>".to_owned(),
                        };
                        vec![
                            r.destination.clone(),
                            r.port.to_string(),
                            r.protocol.clone(),
                            gateway,
                            r.rule.clone(),
                            r.host.clone().unwrap_or_else(|| "-".to_owned()),
                            r.redirects.to_string(),
                        ]
                    }),
                )
            }
        }
        MapsView::Cgroups => {
            let hierarchy = Hierarchy::discover().ok();
            let rows = cgroup_rows(&maps, hierarchy.as_ref())?;
            if json {
                to_json(&serde_json::json!({ "cgroups": rows }))
            } else {
                table(
                    &["ID", "MODE", "PATH"],
                    rows.iter().map(|r| {
                        vec![
                            r.id.to_string(),
                            r.mode.clone(),
                            r.path.clone().unwrap_or_else(|| "<gone>".to_owned()),
                        ]
                    }),
                )
            }
        }
        MapsView::Stats => {
            let stats = maps.stats()?;
            let attachments = datapath::attachments(pins);
            if json {
                let counters: serde_json::Map<String, serde_json::Value> = stats
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), (*value).into()))
                    .collect();
                let attached: Vec<_> = attachments
                    .iter()
                    .map(|a| serde_json::json!({"program": a.program, "cgroupId": a.cgroup_id, "programId": a.program_id}))
                    .collect();
                to_json(&serde_json::json!({ "counters": counters, "attachments": attached }))
            } else {
                let mut text = table(
                    &["COUNTER", "VALUE"],
                    stats
                        .iter()
                        .map(|(n, v)| vec![(*n).to_owned(), v.to_string()]),
                );
                text.push('\n');
                text.push_str(&table(
                    &["PROGRAM", "CGROUP-ID", "PROGRAM-ID"],
                    attachments.iter().map(|a| {
                        vec![
                            a.program.clone(),
                            a.cgroup_id.to_string(),
                            a.program_id.to_string(),
                        ]
                    }),
                ));
                text
            }
        }
    };
    Ok(text)
}

fn to_json(value: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Left-aligned columns separated by three spaces, like kubectl.
pub fn table(headers: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    debug_assert!(
        rows.iter().all(|row| row.len() == headers.len()),
        "every row has a cell per header"
    );
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut text = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(&rows) {
        let mut line = String::new();
        for (index, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if index + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}   ");
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
#[path = "inspect_tests.rs"]
mod tests;
