//! `egress-agent maps ...`: the pinned maps as tables or JSON.

mod lookup;
mod rows;

use std::fmt::Write as _;

pub use lookup::{Connection, Outcome, RefuseReason, SocketKind, Via, lookup};
pub use rows::{CgroupRow, Mode, RouteAction, RouteRow, Snapshot};

use crate::{
    bpffs::PinDir,
    cgroupfs::Hierarchy,
    cli::{MapsView, Output},
    datapath::{self, DatapathError, Maps},
};

/// Renders a view.
pub fn render(
    pins: &PinDir,
    view: MapsView,
    output: Output,
    cgroup_root: Option<&std::path::Path>,
) -> Result<String, DatapathError> {
    let maps = Maps::open(pins)?;
    let hierarchy = match cgroup_root {
        Some(root) => Some(Hierarchy::new(root.to_owned())),
        None => Hierarchy::discover().ok(),
    };
    let snapshot = Snapshot::read(&maps, hierarchy.as_ref())?;
    let json = output == Output::Json;
    let text = match view {
        MapsView::Routes => {
            let rows = snapshot.routes();
            if json {
                to_json(&serde_json::json!({ "routes": rows }))
            } else {
                routes_table(&rows)
            }
        }
        MapsView::Cgroups => {
            let rows = snapshot.cgroups();
            if json {
                to_json(&serde_json::json!({ "cgroups": rows }))
            } else {
                table(
                    &["ID", "MODE", "CLASS", "PATH"],
                    rows.iter().map(|r| {
                        vec![
                            r.id.to_string(),
                            r.mode.to_string(),
                            r.class.to_string(),
                            r.path.clone().unwrap_or_else(|| "<gone>".to_owned()),
                        ]
                    }),
                )
            }
        }
        MapsView::Stats => {
            let stats = maps.stats()?;
            let attachments = datapath::attachments(pins);
            let unselected = snapshot.unselected();
            if json {
                let counters: serde_json::Map<String, serde_json::Value> = stats
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), (*value).into()))
                    .collect();
                let attached: Vec<_> = attachments
                    .iter()
                    .map(|a| serde_json::json!({"program": a.program, "cgroupId": a.cgroup_id, "programId": a.program_id}))
                    .collect();
                to_json(&serde_json::json!({
                    "counters": counters,
                    "attachments": attached,
                    "unselected": unselected,
                }))
            } else {
                let mut text = table(
                    &["COUNTER", "VALUE"],
                    stats
                        .iter()
                        .map(|(n, v)| vec![(*n).to_owned(), v.to_string()]),
                );
                if !unselected.is_empty() {
                    text.push_str(
                        "\nUNSELECTED TASKS REACHING ROUTED DESTINATIONS (they went direct)\n",
                    );
                    text.push_str(&table(
                        &["DESTINATION", "CONNECTIONS"],
                        unselected
                            .iter()
                            .map(|(set, n)| vec![set.clone(), n.to_string()]),
                    ));
                }
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

fn routes_table(rows: &[RouteRow]) -> String {
    table(
        &[
            "DESTINATION",
            "PORT",
            "PROTO",
            "GATEWAY",
            "RULE",
            "HOST",
            "SOURCE",
            "EXPIRES",
            "REDIRECTS",
        ],
        rows.iter().map(|r| {
            let gateway = match (&r.refusal, r.gateways.as_slice()) {
                (Some(reason), _) => format!(
                    "refuse ({})",
                    serde_json::to_value(reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                ),
                (None, gateways) => gateways
                    .iter()
                    .map(|g| {
                        if g.contains(':') {
                            format!("[{g}]:{}", r.gateway_port)
                        } else {
                            format!("{g}:{}", r.gateway_port)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            };
            let source = match &r.cgroup {
                Some(cgroup) => format!("learned by {cgroup}"),
                None => r.source.to_string(),
            };
            vec![
                r.destination.clone(),
                r.port.to_string(),
                r.protocol.to_string(),
                gateway,
                r.rule.clone(),
                r.host.clone().unwrap_or_else(|| "-".to_owned()),
                source,
                r.expires_in_secs
                    .map_or_else(|| "-".to_owned(), |s| format!("{s:.0}s")),
                r.redirects.to_string(),
            ]
        }),
    )
}

/// Pretty JSON with a final newline.
pub fn to_json(value: &impl serde::Serialize) -> String {
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
#[path = "mod_tests.rs"]
mod tests;
