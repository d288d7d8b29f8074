//! The `cluster` suite: the agent on a real Kubernetes (see `egress_tests::realcluster`),
//! installed exactly as the README's "Deploy on Kubernetes" says, on the host's kernel. Each
//! case counts the connections that reached an external origin from anywhere but the gateway
//! pod: the direct ones, which must be 0.
//!
//! One cluster serves every case, in order (a custom harness: `harness = false`); the summary
//! line is `N passed, N failed`.
#![expect(clippy::print_stdout, reason = "the suite's own harness reports")]

mod cases;

use std::{
    net::IpAddr,
    panic::{AssertUnwindSafe, catch_unwind},
    time::{Duration, Instant},
};

use egress_tests::{
    kernel_tests_enabled,
    realcluster::{RealCluster, kubelet::Kubelet, origin},
    scaled,
};

/// Everything a case uses.
pub(crate) struct Suite {
    cluster: RealCluster,
    kubelet: Kubelet,
    peers: origin::Peers,
}

/// The README's install, word for word (`kubectl` is the cluster's, as the admin), then what the
/// example needs around it: the Gateway API CRDs, and what Istio would program for its Gateway.
const README_INSTALL: [&[&str]; 4] = [
    &["apply", "-k", "deploy/"],
    &[
        "-n",
        "egress-agent-system",
        "rollout",
        "status",
        "daemonset/egress-agent",
        "--timeout=300s",
    ],
    &["apply", "-f", "deploy/examples/gateway-api/example.yaml"],
    &[
        "label",
        "namespace",
        "apps",
        "egress-agent.io/redirect=true",
    ],
];

fn main() {
    if !kernel_tests_enabled() {
        return;
    }
    let started = Instant::now();
    let suite = setup();
    println!(
        "cluster: set up in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let mut passed = 0;
    let mut failed = Vec::new();
    for (name, case) in cases::CASES {
        suite.peers.clear();
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| case(&suite)));
        let seconds = started.elapsed().as_secs_f64();
        if outcome.is_ok() {
            println!("test {name} ... ok ({seconds:.1} s)");
            passed += 1;
        } else {
            println!("test {name} ... FAILED ({seconds:.1} s)");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        println!("\n{}", suite.cluster.log_tails());
        println!("failures: {}", failed.join(", "));
    }
    println!("{passed} passed, {} failed", failed.len());
    drop(suite);
    if !failed.is_empty() {
        std::process::exit(1);
    }
}

fn setup() -> Suite {
    let mut cluster = RealCluster::start();
    let peers = origin::start(&mut cluster);
    let kubelet = cluster.kubelet();
    cluster.apply(&manifest("coredns.yaml"));
    let crds = cluster.gateway_crds.display().to_string();
    cluster.kubectl_ok(&["apply", "--server-side", "-f", &crds]);
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/gateways.gateway.networking.k8s.io",
        "--timeout=60s",
    ]);
    for step in README_INSTALL {
        cluster.kubectl_ok(step);
    }
    cluster.apply(&manifest("istio-standin.yaml"));
    let suite = Suite {
        cluster,
        kubelet,
        peers,
    };
    suite.program_gateway();
    suite.wait_for_pod("kube-system", "coredns");
    suite.wait_for_pod("apps", "curl");
    suite
}

/// A manifest of the suite's own (`tests/cluster/manifests`).
pub(crate) fn manifest(name: &str) -> String {
    let path = egress_tests::workspace_root()
        .join("tests/cluster/manifests")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

impl Suite {
    /// Writes the example Gateway's status as Istio would once its Service has an address.
    fn program_gateway(&self) {
        let mut ip = String::new();
        self.cluster.wait_for(
            "the gateway Service's ClusterIP",
            scaled(Duration::from_secs(30)),
            |c| {
                ip = c
                    .kubectl(&[
                        "get",
                        "service",
                        "-n",
                        "gateway-system",
                        "kuadrant-egressgateway-istio",
                        "-o",
                        "jsonpath={.spec.clusterIP}",
                    ])
                    .stdout
                    .iter()
                    .map(|b| char::from(*b))
                    .collect();
                !ip.is_empty()
            },
        );
        let generation = self.cluster.kubectl_ok(&[
            "get",
            "gateway",
            "-n",
            "gateway-system",
            "kuadrant-egressgateway",
            "-o",
            "jsonpath={.metadata.generation}",
        ]);
        let condition = |kind: &str, reason: &str| {
            serde_json::json!({"type": kind, "status": "True", "reason": reason, "message": "the suite's stand-in for Istio",
                "observedGeneration": generation.parse::<u64>().unwrap_or(1), "lastTransitionTime": "2026-01-01T00:00:00Z"})
        };
        let listener = |name: &str, kind: &str, routes: u32| {
            serde_json::json!({"name": name, "attachedRoutes": routes,
                "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": kind}],
                "conditions": [condition("Accepted", "Accepted"), condition("Programmed", "Programmed"),
                    condition("ResolvedRefs", "ResolvedRefs")]})
        };
        let status = serde_json::json!({"status": {
            "addresses": [{"type": "IPAddress", "value": ip}],
            "conditions": [condition("Accepted", "Accepted"), condition("Programmed", "Programmed")],
            "listeners": [listener("http", "HTTPRoute", 1), listener("tls", "TLSRoute", 0)],
        }});
        self.cluster.kubectl_ok(&[
            "patch",
            "gateway",
            "-n",
            "gateway-system",
            "kuadrant-egressgateway",
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]);
    }

    /// Waits until a pod whose name starts with `prefix` runs here and is Ready; returns its
    /// name.
    pub(crate) fn wait_for_pod(&self, namespace: &str, prefix: &str) -> String {
        let mut found = String::new();
        self.cluster.wait_for(
            &format!("a Ready pod {namespace}/{prefix}*"),
            scaled(Duration::from_mins(2)),
            |c| {
                let Some(list) = c.get_json(&["pods", "-n", namespace]) else {
                    return false;
                };
                let ready = list["items"].as_array().into_iter().flatten().find(|p| {
                    p["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with(prefix))
                        && p["metadata"]["deletionTimestamp"].is_null()
                        && p["status"]["conditions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                if let Some(pod) = ready {
                    pod["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .clone_into(&mut found);
                }
                !found.is_empty()
            },
        );
        found
    }

    /// The gateway pod's IP: connections from it are the ones that went through the gateway.
    pub(crate) fn gateway_ip(&self) -> IpAddr {
        let name = self.wait_for_pod("gateway-system", "kuadrant-egressgateway-istio");
        self.kubelet
            .pod_ip("gateway-system", &name)
            .expect("the gateway pod runs")
            .parse()
            .expect("an IP")
    }
}
