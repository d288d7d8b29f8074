//! `explain` as text (kubectl-style sections and tables) or JSON.

use std::fmt::Write as _;

use super::Explanation;
use crate::{
    cli::Output,
    inspect::{table, to_json},
};

/// Renders an explanation.
pub fn render(explanation: &Explanation, output: Output) -> String {
    if output == Output::Json {
        return to_json(explanation);
    }
    let mut text = String::new();
    pod_section(explanation, &mut text);
    cgroup_section(explanation, &mut text);
    host_section(explanation, &mut text);
    learned_section(explanation, &mut text);
    text
}

fn pod_section(explanation: &Explanation, text: &mut String) {
    if let Some(pod) = &explanation.pod {
        let _ = writeln!(text, "pod:        {} (uid {})", pod.name, pod.uid);
        let labels = |labels: &std::collections::BTreeMap<String, String>| {
            if labels.is_empty() {
                "<none>".to_owned()
            } else {
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            }
        };
        let _ = writeln!(text, "labels:     {}", labels(&pod.labels));
        let _ = writeln!(text, "namespace:  {}", labels(&pod.namespace_labels));
        text.push('\n');
        if explanation.policies.is_empty() {
            text.push_str("no EgressRedirectPolicy in the cluster\n");
        } else {
            text.push_str(&table(
                &["POLICY", "ACCEPTED", "REDIRECTS", "WHY"],
                explanation.policies.iter().map(|p| {
                    vec![
                        p.policy.clone(),
                        yes_no(p.accepted),
                        yes_no(p.selects),
                        p.why.clone(),
                    ]
                }),
            ));
        }
        text.push('\n');
    }
}

fn cgroup_section(explanation: &Explanation, text: &mut String) {
    match &explanation.cgroup {
        Some(cgroup) => {
            let _ = writeln!(text, "cgroup:     {} (id {})", cgroup.path, cgroup.id);
            let entry = match (&cgroup.entry, cgroup.class) {
                (Some(entry), Some(class)) => format!("selected by the entry of {entry}, class {class}"),
                (Some(entry), None) => format!("exempt by the entry of {entry}: goes direct"),
                _ => "no entry: not selected, goes direct".to_owned(),
            };
            let _ = writeln!(text, "datapath:   {entry}");
            if !cgroup.rules.is_empty() {
                let _ = writeln!(text, "rules:      {}", cgroup.rules.join(", "));
            }
        }
        None if explanation.pod.is_some() => text.push_str(
            "cgroup:     not found on this node (run explain on the pod's node, in the agent pod there)\n",
        ),
        None => {}
    }
}

fn host_section(explanation: &Explanation, text: &mut String) {
    if let Some(host) = &explanation.host {
        let port = host.port.map(|p| format!(":{p}")).unwrap_or_default();
        let _ = writeln!(text, "\nhost:       {}{port}", host.host);
        let _ = writeln!(
            text,
            "addresses:  {}",
            if host.addresses.is_empty() {
                host.resolve_error
                    .clone()
                    .unwrap_or_else(|| "none".to_owned())
            } else {
                host.addresses.join(", ")
            }
        );
        if !host.routes.is_empty() {
            text.push_str(&table(
                &[
                    "DESTINATION",
                    "PORT",
                    "PROTO",
                    "ACTION",
                    "GATEWAY",
                    "SOURCE",
                    "RULE",
                ],
                host.routes.iter().map(|r| {
                    vec![
                        r.destination.clone(),
                        r.port.to_string(),
                        r.protocol.to_string(),
                        r.action.as_str().to_owned(),
                        r.gateway.as_ref().map_or_else(
                            || "-".to_owned(),
                            |_| format!("{}:{}", r.gateways.join(","), r.gateway_port),
                        ),
                        format!("{:?}", r.source).to_lowercase(),
                        r.rule.clone(),
                    ]
                }),
            ));
        }
        let _ = writeln!(text, "verdict:    {}", host.verdict);
    }
}

fn learned_section(explanation: &Explanation, text: &mut String) {
    if !explanation.learned.is_empty() {
        text.push_str("\nLEARNED BY THIS CGROUP\n");
        text.push_str(&table(
            &["ADDRESS", "HOST", "EXPIRES"],
            explanation.learned.iter().map(|l| {
                vec![
                    l.address.clone(),
                    l.host.clone().unwrap_or_else(|| "-".to_owned()),
                    l.expires_in_secs
                        .map_or_else(|| "-".to_owned(), |s| format!("{s:.0}s")),
                ]
            }),
        ));
    }
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}
