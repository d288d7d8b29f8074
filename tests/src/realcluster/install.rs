//! The agent installed on the [`RealCluster`] exactly as the README's "Deploy on Kubernetes"
//! says, with the cluster DNS, the Gateway API and a stand-in for Istio's gateway: what the
//! `cluster` suite's cases and the benchmark's control plane run against.

use std::{net::IpAddr, time::Duration};

use serde_json::Value;

use super::{RealCluster, kubelet::Kubelet, origin};
use crate::scaled;

/// The cluster with the agent installed as the README says, and the Gateway it routes to.
pub struct Installed {
    // Dropped in this order: the pods, then the control plane.
    /// The fixture's kubelet.
    pub kubelet: Kubelet,
    /// The control plane.
    pub cluster: RealCluster,
    /// The external hosts.
    pub peers: origin::Peers,
}

/// The `kubectl` lines of the README's "Deploy on Kubernetes" section, in order, without their
/// comments: the suite runs exactly these.
fn readme_steps() -> Vec<String> {
    let path = crate::workspace_root().join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Deploy on Kubernetes"))
        .expect("the README has a \"Deploy on Kubernetes\" section");
    let mut steps = Vec::new();
    let mut in_shell = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_shell = line == "```sh";
            continue;
        }
        if in_shell && line.starts_with("kubectl ") {
            let command = line.split(" #").next().unwrap_or(line).trim_end();
            steps.push(command.to_owned());
        }
    }
    steps
}

/// Runs one README step: `kubectl exec deploy/NAME -- ...` in a pod of that Deployment (the
/// fixture plays the kubelet's exec), anything else as the admin's kubectl.
fn run_step(suite: &Installed, step: &str) -> String {
    let words: Vec<&str> = step.split_whitespace().skip(1).collect();
    if let Some(at) = words.iter().position(|w| *w == "exec") {
        let namespace = words[..at]
            .windows(2)
            .find(|w| w[0] == "-n")
            .map_or("default", |w| w[1]);
        let deployment = words[at + 1].trim_start_matches("deploy/");
        let command: Vec<&str> = words
            .iter()
            .skip_while(|w| **w != "--")
            .skip(1)
            .copied()
            .collect();
        let pod = suite.wait_for_pod(namespace, deployment);
        let output = suite
            .kubelet
            .exec(namespace, &pod, &command)
            .expect("the pod runs");
        assert!(output.status.success(), "{step}: {output:?}");
        return String::from_utf8_lossy(&output.stdout).into_owned();
    }
    suite.cluster.kubectl_ok(&words)
}

impl Installed {
    /// Starts the cluster, installs what the README assumes (the cluster DNS, the Gateway API)
    /// and runs the README's steps.
    pub fn install() -> Self {
        Self::install_on(RealCluster::start())
    }

    /// As [`Self::install`], on a cluster already started.
    pub fn install_on(mut cluster: RealCluster) -> Self {
        let peers = origin::start(&mut cluster);
        let kubelet = cluster.kubelet();
        // What the README assumes is there: the cluster DNS and the Gateway API.
        cluster.apply(&manifest("coredns.yaml"));
        let crds = cluster.gateway_crds.display().to_string();
        cluster.kubectl_ok(&["apply", "--server-side", "-f", &crds]);
        cluster.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "crd/gateways.gateway.networking.k8s.io",
            "--timeout=60s",
        ]);
        let suite = Self {
            kubelet,
            cluster,
            peers,
        };
        let steps = readme_steps();
        assert_eq!(steps.len(), 7, "the README's deploy steps: {steps:#?}");
        for step in &steps {
            if step.contains(" exec ") {
                // As the Gateway's controller would have by now: its Service, pods and status.
                suite.cluster.apply(&manifest("istio-standin.yaml"));
                suite.program_gateway();
                suite.wait_gateway_endpoints();
                suite.wait_condition("gateway-system", "httpbin", "Accepted", "True");
            }
            eprintln!("cluster: README: {step}");
            let out = run_step(&suite, step);
            if step.contains(" exec ") {
                assert!(out.contains("Via: 1.1 egress-gateway"), "{step}: {out}");
            }
        }
        suite.wait_for_pod("kube-system", "coredns");
        suite
    }

    /// Writes the example Gateway's status as Istio would once its Service has an address.
    pub fn program_gateway(&self) {
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

    /// Waits until the gateway Service has a ready endpoint (kube-proxy rejects connections to
    /// a Service without one).
    pub fn wait_gateway_endpoints(&self) {
        self.cluster.wait_for(
            "a ready endpoint of the gateway Service",
            scaled(Duration::from_mins(2)),
            |c| {
                c.get_json(&[
                    "endpointslices",
                    "-n",
                    "gateway-system",
                    "-l",
                    "kubernetes.io/service-name=kuadrant-egressgateway-istio",
                ])
                .is_some_and(|list| {
                    list["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
                        .any(|e| e["conditions"]["ready"] == true)
                })
            },
        );
    }

    /// Waits until a pod whose name starts with `prefix` runs here and is Ready; returns its
    /// name.
    pub fn wait_for_pod(&self, namespace: &str, prefix: &str) -> String {
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
    pub fn gateway_ip(&self) -> IpAddr {
        let name = self.wait_for_pod("gateway-system", "kuadrant-egressgateway-istio");
        self.kubelet
            .pod_ip("gateway-system", &name)
            .expect("the gateway pod runs")
            .parse()
            .expect("an IP")
    }

    /// Waits for a condition of a policy to have `status`; returns its reason.
    pub fn wait_condition(&self, namespace: &str, name: &str, kind: &str, status: &str) -> String {
        let until = std::time::Instant::now() + scaled(Duration::from_mins(1));
        let mut last = Value::Null;
        while std::time::Instant::now() < until {
            if let Some(policy) =
                self.cluster
                    .get_json(&["egressredirectpolicy", "-n", namespace, name])
            {
                let found = policy["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == kind && c["status"] == status)
                    .map(|c| c["reason"].as_str().unwrap_or_default().to_owned());
                if let Some(reason) = found {
                    return reason;
                }
                last = policy["status"].clone();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{namespace}/{name} never had {kind}={status}; its status: {last:#}\n{}",
            self.cluster.log_tails()
        );
    }
}

/// A manifest of the fixture's own (`tests/cluster/manifests`).
pub fn manifest(name: &str) -> String {
    let path = crate::workspace_root()
        .join("tests/cluster/manifests")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}
