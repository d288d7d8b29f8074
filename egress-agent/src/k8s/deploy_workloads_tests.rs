//! The workloads' ports: a probe names a port its container declares, and the `PodMonitor`
//! selects the agent's pods and scrapes a port they name. The API server checks neither (the
//! kubelet would fail the probe; the operator would scrape nothing).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{
    AGENT, Document, assert_none, assert_reported, containers, deploy, edited, items, of_kind,
    text, workloads,
};

const PROBES: [&str; 3] = ["livenessProbe", "readinessProbe", "startupProbe"];

fn port_names(container: &Value) -> BTreeSet<&str> {
    items(&container["ports"])
        .map(|port| text(&port["name"]))
        .filter(|name| !name.is_empty())
        .collect()
}

/// A probe that names a port names one its container declares (the kubelet would fail it).
fn probe_problems(docs: &[Document]) -> Vec<String> {
    let mut problems = Vec::new();
    for (doc, template) in workloads(docs) {
        for container in containers(template) {
            let declared = port_names(container);
            for probe in PROBES {
                for handler in ["httpGet", "tcpSocket", "grpc"] {
                    if let Some(port) = container[probe][handler]["port"].as_str()
                        && !declared.contains(port)
                    {
                        problems.push(format!(
                            "{}: container {}: {probe}.{handler}.port {port:?} is not one of its named ports {declared:?}",
                            doc.describe(),
                            text(&container["name"]),
                        ));
                    }
                }
            }
        }
    }
    problems
}

/// A `PodMonitor` selects pods of a workload under `deploy/`, and each of its endpoints
/// names a port of every pod it selects.
fn podmonitor_problems(docs: &[Document]) -> Vec<String> {
    let mut problems = Vec::new();
    for monitor in of_kind(docs, "PodMonitor") {
        let spec = &monitor.value["spec"];
        let selector = &spec["selector"];
        if selector.get("matchExpressions").is_some() {
            problems.push(format!(
                "{}: spec.selector.matchExpressions is not evaluated by this test: use matchLabels, or teach the test",
                monitor.describe()
            ));
        }
        let wanted = &selector["matchLabels"];
        let any = spec["namespaceSelector"]["any"].as_bool() == Some(true);
        let mut namespaces: Vec<&str> = items(&spec["namespaceSelector"]["matchNames"])
            .map(text)
            .collect();
        if namespaces.is_empty() {
            namespaces.push(monitor.namespace());
        }
        let targets: Vec<(&Document, &Value)> = workloads(docs)
            .filter(|(doc, template)| {
                (any || namespaces.contains(&doc.namespace()))
                    && wanted
                        .as_object()
                        .into_iter()
                        .flatten()
                        .all(|(key, value)| template["metadata"]["labels"][key] == *value)
            })
            .collect();
        if targets.is_empty() {
            problems.push(format!(
                "{}: selects no DaemonSet's or Deployment's pods under deploy/ ({} in {namespaces:?})",
                monitor.describe(),
                wanted,
            ));
        }
        for (i, endpoint) in items(&spec["podMetricsEndpoints"]).enumerate() {
            let port = text(&endpoint["port"]);
            for (target, template) in &targets {
                if !containers(template).any(|c| port_names(c).contains(port)) {
                    problems.push(format!(
                        "{}: spec.podMetricsEndpoints[{i}].port {port:?} is not a named port of {}",
                        monitor.describe(),
                        target.describe(),
                    ));
                }
            }
        }
    }
    problems
}

// --- deploy/ as checked in -----------------------------------------------------------------------

#[test]
fn probes_name_declared_ports() {
    assert_none("probes under deploy/", &probe_problems(deploy()));
}

#[test]
fn the_podmonitor_scrapes_the_agents_metrics_port() {
    assert_eq!(of_kind(deploy(), "PodMonitor").count(), 1);
    assert_none("PodMonitors under deploy/", &podmonitor_problems(deploy()));
}

// --- each check fails when it should -------------------------------------------------------------

#[test]
fn a_probe_on_an_undeclared_port_is_reported() {
    let docs = edited("DaemonSet", AGENT.0, |ds| {
        ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"] = json!("metric");
    });
    let problems = probe_problems(&docs);
    assert_reported(
        &problems,
        &[
            "daemonset.yaml",
            "container agent",
            "readinessProbe.httpGet.port \"metrics\"",
        ],
    );
    assert_reported(&problems, &["livenessProbe.httpGet.port \"metrics\""]);
}

#[test]
fn a_podmonitor_on_an_unknown_port_is_reported() {
    let docs = edited("PodMonitor", "egress-agent", |pm| {
        pm["spec"]["podMetricsEndpoints"][0]["port"] = json!("metric");
    });
    assert_reported(
        &podmonitor_problems(&docs),
        &[
            "podmonitor.yaml",
            "port \"metric\" is not a named port of deploy/daemonset.yaml",
        ],
    );
}

#[test]
fn a_podmonitor_that_selects_nothing_is_reported() {
    let docs = edited("PodMonitor", "egress-agent", |pm| {
        pm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = json!("egress");
    });
    assert_reported(
        &podmonitor_problems(&docs),
        &[
            "podmonitor.yaml",
            "selects no DaemonSet's or Deployment's pods",
        ],
    );
    let docs = edited("PodMonitor", "egress-agent", |pm| {
        pm["spec"]["namespaceSelector"]["matchNames"] = json!(["kube-system"]);
    });
    assert_reported(&podmonitor_problems(&docs), &["selects no", "kube-system"]);
}
