//! `egress-agent status`: the running agent's view, from its admin endpoint.

use std::fmt::Write as _;

use serde_json::Value;

use crate::inspect::table;

/// Renders a `/status` document as text.
pub fn render(document: &Value) -> String {
    let agent = &document["agent"];
    let mut text = String::new();
    let _ = writeln!(
        text,
        "config: {} ({})",
        agent["configPath"].as_str().unwrap_or("?"),
        if agent["configLoaded"] == true {
            "in force"
        } else {
            "NOT loaded"
        }
    );
    if let Some(error) = agent["configError"].as_str() {
        let _ = writeln!(text, "last edit REJECTED, previous state kept: {error}");
    }
    if let Some(error) = agent["reconcileError"].as_str() {
        let _ = writeln!(text, "maps only partly updated: {error}");
    }
    let _ = writeln!(
        text,
        "attached: {}   routes: {}   cgroups: {}",
        agent["attached"], agent["routes"], agent["cgroups"]
    );
    for missing in agent["missingCgroups"].as_array().into_iter().flatten() {
        let _ = writeln!(
            text,
            "cgroup not found (yet): {}",
            missing.as_str().unwrap_or("?")
        );
    }
    let conflicts = agent["conflicts"].as_array().cloned().unwrap_or_default();
    if !conflicts.is_empty() {
        text.push_str("\nCONFLICTS (the first rule in config order wins)\n");
        text.push_str(&table(
            &["DESTINATION", "PORT", "PROTO", "WINNER", "LOSER"],
            conflicts.iter().map(|c| {
                ["destination", "port", "protocol", "winner", "loser"]
                    .iter()
                    .map(|k| {
                        c[*k]
                            .as_str()
                            .map_or_else(|| c[*k].to_string(), str::to_owned)
                    })
                    .collect()
            }),
        ));
    }
    let hosts = document["hosts"].as_array().cloned().unwrap_or_default();
    text.push('\n');
    text.push_str(&table(
        &[
            "HOST",
            "STATE",
            "ADDRESSES",
            "NEXT-REFRESH",
            "FAILURES",
            "LAST-ERROR",
        ],
        hosts.iter().map(|h| {
            let addresses: Vec<String> = h["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    let addr = a["address"].as_str().unwrap_or("?");
                    if a["inAnswer"] == true {
                        addr.to_owned()
                    } else {
                        format!(
                            "{addr} (grace {:.0}s)",
                            a["leavesInSecs"].as_f64().unwrap_or(0.0)
                        )
                    }
                })
                .collect();
            vec![
                h["name"].as_str().unwrap_or("?").to_owned(),
                h["state"].as_str().unwrap_or("?").to_owned(),
                if addresses.is_empty() {
                    "-".to_owned()
                } else {
                    addresses.join(", ")
                },
                format!("{:.1}s", h["nextRefreshInSecs"].as_f64().unwrap_or(0.0)),
                h["failures"].to_string(),
                h["lastError"].as_str().unwrap_or("-").to_owned(),
            ]
        }),
    ));
    text
}
