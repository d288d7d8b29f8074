//! A node and its cluster for the Kubernetes-mode tests: pod cgroups laid out as the kubelet
//! (systemd driver) lays them out, API objects as the test server stores them, and an agent
//! pointed at both.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Agent, TestCgroup, kube::FakeApi};

/// The node the tests' pods run on.
pub const NODE: &str = "node-1";

/// A node's cgroup2 hierarchy as the kubelet's systemd driver lays it out.
#[derive(Debug)]
pub struct Node {
    /// `kubepods-burstable.slice`, where burstable pods go (dropped before its parents).
    pub burstable: TestCgroup,
    /// `kubepods.slice`.
    pub kubepods: TestCgroup,
    /// The node's cgroup root (passed as `--cgroup-root`).
    pub root: TestCgroup,
}

impl Node {
    /// A new hierarchy.
    pub fn new() -> Self {
        let root = TestCgroup::new("k8s-node");
        let kubepods = root.child("kubepods.slice");
        let burstable = kubepods.child("kubepods-burstable.slice");
        Self {
            burstable,
            kubepods,
            root,
        }
    }

    /// Creates a pod's cgroup with one container scope.
    pub fn pod(&self, uid: &str) -> PodCgroup {
        let pod = self.burstable.child(&format!(
            "kubepods-burstable-pod{}.slice",
            uid.replace('-', "_")
        ));
        let container = pod.child("cri-containerd-0123456789abcdef.scope");
        PodCgroup { container, pod }
    }

    /// Starts an agent for this node ([`NODE`]) against `api` with `extra` arguments.
    pub fn agent(&self, api: &FakeApi, extra: &[&str]) -> Agent {
        self.agent_named(NODE, api, extra)
    }

    /// As [`Node::agent`], for a node of another name.
    pub fn agent_named(&self, name: &str, api: &FakeApi, extra: &[&str]) -> Agent {
        let kubeconfig = api.kubeconfig().display().to_string();
        let root = self.root.path().display().to_string();
        let mut args = vec![
            "--node-name",
            name,
            "--kubeconfig",
            &kubeconfig,
            "--cgroup-root",
            &root,
            "--lease-namespace",
            "egress-agent-system",
        ];
        args.extend_from_slice(extra);
        Agent::start_kubernetes(&args)
    }
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}

/// A pod's cgroup and its container's (the container drops first).
#[derive(Debug)]
pub struct PodCgroup {
    /// The container scope, where the pod's processes run.
    pub container: TestCgroup,
    /// The pod cgroup.
    pub pod: TestCgroup,
}

/// A running Burstable pod on [`NODE`].
pub fn pod(namespace: &str, name: &str, uid: &str, labels: &Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": labels},
        "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "example"}]},
        "status": {"phase": "Running", "qosClass": "Burstable"}
    })
}

/// A namespace.
pub fn namespace(name: &str, labels: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// A Service with one ClusterIP (none when `ip` is empty) and TCP ports.
pub fn service(namespace: &str, name: &str, ip: &str, ports: &[u16], labels: &Value) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"port": p, "protocol": "TCP"}))
        .collect();
    let mut spec = json!({"ports": ports});
    if ip.is_empty() {
        spec["clusterIP"] = json!("None");
    } else {
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
    }
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec
    })
}

/// The EndpointSlice of a Service, listing `pods` (same namespace) as endpoints.
pub fn endpoints(namespace: &str, service: &str, pods: &[&str]) -> Value {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|p| json!({"addresses": ["10.244.0.9"], "targetRef": {"kind": "Pod", "name": p, "namespace": namespace}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-abcde"), "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints
    })
}

/// A policy for `hostnames` via a Service, redirecting `port` to `gateway_port`.
pub fn policy(
    namespace: &str,
    name: &str,
    service: &str,
    hostnames: &[&str],
    port: u16,
    gateway_port: u16,
) -> Value {
    json!({
        "apiVersion": "egress-agent.io/v1alpha1", "kind": "EgressRedirectPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRef": {"group": "", "kind": "Service", "name": service},
            "hostnames": hostnames,
            "ports": [{"port": port, "gatewayPort": gateway_port}]
        }
    })
}

/// The policies' collection path, for [`FakeApi::get`].
pub const POLICIES: &str = "/apis/egress-agent.io/v1alpha1/egressredirectpolicies";

/// A stored policy's condition of `type_`, if any.
pub fn condition(api: &FakeApi, namespace: &str, name: &str, type_: &str) -> Option<Value> {
    api.get(POLICIES, namespace, name)["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// Waits (scaled) until `done`, or panics naming `what`.
pub fn wait(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + crate::scaled(Duration::from_secs(20));
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("never happened: {what}");
}

/// The agent's cgroup entries: (id, mode).
pub fn cgroup_ids(agent: &Agent) -> Vec<(u64, String)> {
    agent
        .maps_json("cgroups")
        .and_then(|v| v["cgroups"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["id"].as_u64().unwrap_or(0),
                c["mode"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}
