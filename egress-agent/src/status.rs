//! The status document: what the running agent reports about itself at `GET /status`, and what
//! `egress-agent status` renders. The server serializes and the CLI deserializes these same
//! types. JSON field names are stable (docs/cli.md): fields are only ever added.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::{
    dns::{Health, HostStatus},
    inspect::table,
    route::Protocol,
};

/// The `/status` document.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDocument {
    /// The agent.
    pub agent: AgentStatus,
    /// Every hostname the DNS engine resolves.
    pub hosts: Vec<HostStatus>,
    /// What the kernel learned from the DNS answers selected workloads received, by hostname
    /// pattern and cgroup (as of the last resync).
    #[serde(default)]
    pub learned: Vec<LearnedStatus>,
}

/// The addresses one selected cgroup learned for one hostname pattern.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LearnedStatus {
    /// The hostname pattern the answers matched (`api.example.com`, `*.example.com`).
    pub host: String,
    /// The selected cgroup whose workloads received the answers (only they use the addresses).
    pub cgroup: String,
    /// How many addresses.
    pub addresses: usize,
    /// Seconds until the last of them leaves the routes (TTL plus grace) unless answered again.
    pub expires_in_secs: f64,
}

/// What the agent reports about itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// Where the intent comes from: the configuration file, or `kubernetes (node N)`.
    pub config_path: String,
    /// Whether a valid intent is in force.
    pub config_loaded: bool,
    /// Why the source's last input was rejected (cleared by the next valid one); the previous
    /// intent stays in force.
    pub config_error: Option<String>,
    /// Whether the programs are attached.
    pub attached: bool,
    /// Routes installed by the last reconcile.
    pub routes: usize,
    /// Cgroup entries installed by the last reconcile.
    pub cgroups: usize,
    /// What the source wanted but could not find (cgroups that do not exist yet).
    pub missing_cgroups: Vec<String>,
    /// Destinations claimed by two rules with different gateways.
    pub conflicts: Vec<ConflictStatus>,
    /// The last reconcile's error, if it failed.
    pub reconcile_error: Option<String>,
}

/// A conflict between two rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConflictStatus {
    /// The contested destinations: a hostname (`first +N` for several), or a rule's static
    /// addresses.
    pub destination: String,
    /// Port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// The rule whose gateway is installed (first in priority order).
    pub winner: String,
    /// The rule that lost.
    pub loser: String,
}

/// Renders a document as text.
pub fn render(document: &StatusDocument) -> String {
    let agent = &document.agent;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "config: {} ({})",
        agent.config_path,
        if agent.config_loaded {
            "in force"
        } else {
            "NOT loaded"
        }
    );
    if let Some(error) = &agent.config_error {
        let _ = writeln!(text, "last edit REJECTED, previous state kept: {error}");
    }
    if let Some(error) = &agent.reconcile_error {
        let _ = writeln!(text, "maps only partly updated: {error}");
    }
    let _ = writeln!(
        text,
        "attached: {}   routes: {}   cgroups: {}",
        agent.attached, agent.routes, agent.cgroups
    );
    for missing in &agent.missing_cgroups {
        let _ = writeln!(text, "cgroup not found (yet): {missing}");
    }
    if !agent.conflicts.is_empty() {
        text.push_str("\nCONFLICTS (the first rule in priority order wins)\n");
        text.push_str(&table(
            &["DESTINATION", "PORT", "PROTO", "WINNER", "LOSER"],
            agent.conflicts.iter().map(|c| {
                vec![
                    c.destination.clone(),
                    c.port.to_string(),
                    c.protocol.to_string(),
                    c.winner.clone(),
                    c.loser.clone(),
                ]
            }),
        ));
    }
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
        document.hosts.iter().map(host_row),
    ));
    if !document.learned.is_empty() {
        text.push_str("\nLEARNED FROM ANSWERS\n");
        text.push_str(&table(
            &["HOST", "CGROUP", "ADDRESSES", "EXPIRES"],
            document.learned.iter().map(|l| {
                vec![
                    l.host.clone(),
                    l.cgroup.clone(),
                    l.addresses.to_string(),
                    format!("{:.0}s", l.expires_in_secs),
                ]
            }),
        ));
    }
    text
}

fn host_row(host: &HostStatus) -> Vec<String> {
    let addresses: Vec<String> = host
        .addresses
        .iter()
        .map(|a| {
            if a.in_answer {
                a.address.to_string()
            } else {
                format!("{} (grace {:.0}s)", a.address, a.leaves_in_secs)
            }
        })
        .collect();
    vec![
        host.name.clone(),
        health_name(host.state).to_owned(),
        if addresses.is_empty() {
            "-".to_owned()
        } else {
            addresses.join(", ")
        },
        format!("{:.1}s", host.next_refresh_in_secs),
        host.failures.to_string(),
        host.last_error.clone().unwrap_or_else(|| "-".to_owned()),
    ]
}

/// The name a health has in the document and the table.
pub const fn health_name(health: Health) -> &'static str {
    match health {
        Health::Pending => "pending",
        Health::Fresh => "fresh",
        Health::Stale => "stale",
        Health::NxDomain => "nxdomain",
        Health::NoData => "nodata",
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
