//! The control plane in Kubernetes mode, on the real cluster of the `cluster` suite
//! (`egress_tests::realcluster`): the agent installed as the README says (its DaemonSet, its
//! `ServiceAccount` and RBAC), a cluster of 10,000 namespaces and 10,000 Services with their
//! EndpointSlices (none a gateway's), and 110 pods on this node. Measured: the agent's RSS
//! and CPU, idle and under churn of 20 pods a second; policy change → maps; pod → entry in the
//! cgroups map, one at a time and under churn; and the requests the agent sends the API server
//! per minute (its audit log).
//!
//! The node's pods other than the install's are only a cgroup and an API object (annotated
//! [`kubelet::EXTERNAL`], so the fixture's kubelet leaves them alone): the benchmark plays
//! their kubelet as a real one does, in the same order (the pod is in the API, then its cgroup
//! appears, then its status says Running). Objects go through one long-lived client-go client
//! (`cluster apiload`). Map entries are timed by polling the pinned maps directly (a `bpf()`
//! lookup every 100 µs).

use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use egress_tests::{
    TestCgroup,
    bpf::PinnedMap,
    realcluster::{
        Binaries, NODE, RealCluster, agent_map,
        apiload::{ApiLoad, Verb},
        install::Installed,
        kubelet,
    },
};
use serde_json::{Value, json};

use super::env;
use crate::shell;

/// Cluster size.
pub(crate) const NAMESPACES: usize = 10_000;
pub(crate) const SERVICES: usize = 10_000;
/// Pods on the node, the install's included (the kubelet's default `maxPods`).
pub(crate) const NODE_PODS: usize = 110;
/// Pods created one by one for pod → map.
pub(crate) const NEW_PODS: usize = 200;
/// Policy changes timed.
pub(crate) const POLICY_CHANGES: usize = 50;
/// Pods created (and as many deleted) per second under churn, and for how long.
pub(crate) const CHURN_RATE: u32 = 20;
pub(crate) const CHURN: Duration = Duration::from_secs(30);
/// How long idle CPU and requests are sampled.
pub(crate) const SAMPLE: Duration = Duration::from_secs(30);
/// The namespace of the node's pods: the one the README labels.
const APPS: &str = "apps";

/// What this part measured.
pub(crate) struct ControlResult {
    pub(crate) rss_mib: f64,
    pub(crate) idle_cpu: f64,
    pub(crate) idle_requests_per_min: f64,
    pub(crate) churn_cpu: f64,
    pub(crate) churn_pods_per_sec: f64,
    pub(crate) churn_requests_per_min: f64,
    pub(crate) policy_ms: Vec<f64>,
    /// Pod created in the API → entry (its cgroup made right after), one at a time.
    pub(crate) pod_ms: Vec<f64>,
    /// The same under churn.
    pub(crate) churn_pod_ms: Vec<f64>,
    /// Pod deleted (cgroup removed, then the API object) → entry gone, under churn.
    pub(crate) churn_gone_ms: Vec<f64>,
}

/// A pod the benchmark plays the kubelet for.
struct BenchPod {
    object: Value,
    cgroup: TestCgroup,
}

/// Runs this part.
pub(crate) fn run(built: crate::cluster::Built) -> anyhow::Result<ControlResult> {
    let binaries = Binaries {
        cluster: built.binary,
        gateway_crds: built.gateway_crds,
        ours: shell::release_bin("egress-agent")
            .parent()
            .context("target/release")?
            .to_owned(),
    };
    let installed = Installed::install_on(RealCluster::start_with(binaries));
    let mut api = ApiLoad::start(&installed.cluster, 16);
    populate(&mut api)?;
    let agent_pod = installed.wait_for_pod("egress-agent-system", "egress-agent");
    let pid = installed
        .kubelet
        .pid("egress-agent-system", &agent_pod, "agent")
        .context("the agent's process")?;
    let cgroups = PinnedMap::open(&agent_map("CGROUPS"));
    let on_node = node_pods(&installed.cluster)?;
    let mut pods = Vec::new();
    for n in on_node..NODE_PODS {
        pods.push(start_pod(&mut api, &installed, &format!("pod-{n:04}"))?.0);
    }
    wait(Duration::from_mins(2), "the node's pods selected", || {
        pods.iter()
            .all(|p| cgroups.lookup(&p.cgroup.id().to_ne_bytes(), 8).is_some())
    })?;
    println!(
        "bench: the agent settled with {NODE_PODS} pods on the node ({on_node} of the install); sampling"
    );
    let requests = || installed.cluster.audit().len();
    let (idle_cpu, idle_requests_per_min) = sample(pid, &requests, || {
        std::thread::sleep(SAMPLE);
        Ok(())
    })?;
    let targets = PinnedMap::open(&agent_map("TARGETS"));
    let policy_ms = policy_changes(&mut api, &targets)?;
    let pod_ms = new_pods(&mut api, &installed, &cgroups)?;
    let mut churned = Churned::default();
    let (churn_cpu, churn_requests_per_min) = sample(pid, &requests, || {
        churned = churn(&mut api, &installed, &cgroups, pods)?;
        Ok(())
    })?;
    let rss_mib = env::rss_mib(pid)?;
    drop(api);
    drop(installed);
    Ok(ControlResult {
        rss_mib,
        idle_cpu,
        idle_requests_per_min,
        churn_cpu,
        churn_pods_per_sec: churned.pods_per_sec,
        churn_requests_per_min,
        policy_ms,
        pod_ms,
        churn_pod_ms: churned.added_ms,
        churn_gone_ms: churned.gone_ms,
    })
}

/// Namespaces, Services nobody points at (each selecting no pod, so the EndpointSlice
/// controller gives each an empty slice) and the policy the changes are timed on.
fn populate(api: &mut ApiLoad) -> anyhow::Result<()> {
    let started = Instant::now();
    let namespaces: Vec<Value> = (0..NAMESPACES)
        .map(|n| {
            json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": format!("ns-{n:05}"), "labels": {"team": format!("t{}", n % 50)}}})
        })
        .collect();
    check(&api.all(Verb::Create, &namespaces), "namespaces")?;
    let services: Vec<Value> = (0..SERVICES)
        .map(|n| {
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("svc-{n:05}"), "namespace": format!("ns-{:05}", n % NAMESPACES)},
                "spec": {"selector": {"app": format!("svc-{n:05}")}, "ports": [{"port": 80}]}})
        })
        .collect();
    check(&api.all(Verb::Create, &services), "Services")?;
    api.one(Verb::Apply, &policy(10_000))
        .map_err(anyhow::Error::msg)?;
    println!(
        "bench: created {NAMESPACES} namespaces and {SERVICES} Services in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn check(errors: &[String], what: &str) -> anyhow::Result<()> {
    if let Some(first) = errors.first() {
        bail!("{} of the {what} failed; the first: {first}", errors.len());
    }
    Ok(())
}

/// The benchmark's own policy, in the Gateway's namespace, on `port`.
fn policy(port: u16) -> Value {
    json!({"apiVersion": "egress-agent.io/v1alpha1", "kind": "EgressRedirectPolicy",
    "metadata": {"name": "bench", "namespace": "gateway-system"},
    "spec": {
        "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "kuadrant-egressgateway"},
        "hostnames": ["web.bench.test"],
        "ports": [{"port": port, "gatewayPort": 80}]
    }})
}

/// How many pods run on the node now.
fn node_pods(cluster: &RealCluster) -> anyhow::Result<usize> {
    let list = cluster
        .get_json(&[
            "pods",
            "-A",
            &format!("--field-selector=spec.nodeName={NODE}"),
        ])
        .context("listing the node's pods")?;
    Ok(list["items"].as_array().map_or(0, Vec::len))
}

/// Plays the kubelet for a new pod: the pod in the API (bound to the node), its cgroup, then
/// its status. Also returns when the create was sent.
fn start_pod(
    api: &mut ApiLoad,
    installed: &Installed,
    name: &str,
) -> anyhow::Result<(BenchPod, Instant)> {
    let object = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": APPS, "labels": {"app": "bench"},
            "annotations": {kubelet::EXTERNAL: "the benchmark"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}});
    let sent = Instant::now();
    let uid = api
        .one(Verb::Create, &object)
        .map_err(|err| anyhow::anyhow!("creating pod {name}: {err}"))?;
    let cgroup = installed.cluster.cgroups.besteffort.child(&format!(
        "kubepods-besteffort-pod{}.slice",
        uid.replace('-', "_")
    ));
    let status = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": APPS},
        "status": {"phase": "Running", "podIP": "10.244.200.1", "podIPs": [{"ip": "10.244.200.1"}],
            "conditions": [{"type": "Ready", "status": "True"}]}});
    api.one(Verb::ApplyStatus, &status)
        .map_err(|err| anyhow::anyhow!("pod {name}'s status: {err}"))?;
    Ok((BenchPod { object, cgroup }, sent))
}

/// Plays the kubelet for a pod's end: its cgroup goes, then its API object.
fn stop_pod(api: &mut ApiLoad, pod: BenchPod) -> anyhow::Result<()> {
    drop(pod.cgroup);
    api.one(Verb::Delete, &pod.object)
        .map(drop)
        .map_err(anyhow::Error::msg)
}

/// The agent's CPU share and API requests per minute while `during` runs.
fn sample(
    pid: u32,
    requests: &dyn Fn() -> usize,
    during: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64)> {
    let (cpu, count, started) = (env::cpu_seconds(pid)?, requests(), Instant::now());
    during()?;
    let elapsed = started.elapsed().as_secs_f64();
    // The audit log is written as requests complete: give the last ones a moment.
    std::thread::sleep(Duration::from_millis(500));
    #[expect(clippy::cast_precision_loss, reason = "a few thousand requests")]
    let per_min = (requests().saturating_sub(count)) as f64 * 60.0 / elapsed;
    Ok(((env::cpu_seconds(pid)? - cpu) / elapsed, per_min))
}

/// Changes the policy's port `POLICY_CHANGES` times; ms from sending the change until the new
/// target is in the map.
fn policy_changes(api: &mut ApiLoad, targets: &PinnedMap) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::new();
    for change in 0..POLICY_CHANGES {
        let port = 10_001 + u16::try_from(change)?;
        let started = Instant::now();
        api.one(Verb::Apply, &policy(port))
            .map_err(anyhow::Error::msg)?;
        let wanted = port.to_be_bytes();
        wait_fast(Duration::from_secs(10), "the new port in TARGETS", || {
            targets.keys(12).iter().any(|key| key[10..12] == wanted)
        })?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(times)
}

/// Watches the cgroups map from a thread of its own, so that an entry is timed when it
/// changes, not when the benchmark next looks: pods waiting for their entry, and stopped pods
/// waiting for its removal.
#[derive(Default)]
struct Poller {
    adding: Mutex<Vec<([u8; 8], Instant)>>,
    going: Mutex<Vec<([u8; 8], Instant)>>,
    added_ms: Mutex<Vec<f64>>,
    gone_ms: Mutex<Vec<f64>>,
    stop: AtomicBool,
}

impl Poller {
    fn run(&self, cgroups: &PinnedMap) {
        while !self.stop.load(Ordering::Relaxed) {
            Self::poll(&self.adding, &self.added_ms, |id| {
                cgroups.lookup(id, 8).is_some()
            });
            Self::poll(&self.going, &self.gone_ms, |id| {
                cgroups.lookup(id, 8).is_none()
            });
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    fn poll(
        waiting: &Mutex<Vec<([u8; 8], Instant)>>,
        times: &Mutex<Vec<f64>>,
        done: impl Fn(&[u8; 8]) -> bool,
    ) {
        let mut waiting = waiting.lock().expect("poller");
        waiting.retain(|(id, since)| {
            let finished = done(id);
            if finished {
                let ms = since.elapsed().as_secs_f64() * 1000.0;
                times.lock().expect("poller").push(ms);
            }
            !finished
        });
    }

    /// Times `pod` from `sent` to its entry.
    fn expect_entry(&self, pod: &BenchPod, sent: Instant) {
        let id = pod.cgroup.id().to_ne_bytes();
        self.adding.lock().expect("poller").push((id, sent));
    }

    fn pending(&self) -> (usize, usize) {
        (
            self.adding.lock().expect("poller").len(),
            self.going.lock().expect("poller").len(),
        )
    }

    /// Waits up to `limit` for every pod to be done.
    fn settle(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while self.pending() != (0, 0) {
            if Instant::now() > deadline {
                let (adding, going) = self.pending();
                bail!("{adding} pods never got an entry and {going} never lost theirs");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// Times pods while `during` runs (see [`Poller`]); the times to an entry and to its removal.
fn timed(
    cgroups: &PinnedMap,
    during: impl FnOnce(&Poller) -> anyhow::Result<()>,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let poller = Poller::default();
    std::thread::scope(|scope| {
        scope.spawn(|| poller.run(cgroups));
        let outcome = during(&poller).and_then(|()| poller.settle(Duration::from_secs(30)));
        poller.stop.store(true, Ordering::Relaxed);
        outcome
    })?;
    Ok((
        poller.added_ms.into_inner().expect("poller"),
        poller.gone_ms.into_inner().expect("poller"),
    ))
}

/// Creates `NEW_PODS` pods one at a time; ms from sending the create to the entry.
fn new_pods(
    api: &mut ApiLoad,
    installed: &Installed,
    cgroups: &PinnedMap,
) -> anyhow::Result<Vec<f64>> {
    let (added, _) = timed(cgroups, |poller| {
        for n in 0..NEW_PODS {
            let (pod, sent) = start_pod(api, installed, &format!("new-{n:04}"))?;
            poller.expect_entry(&pod, sent);
            poller.settle(Duration::from_secs(10))?;
            stop_pod(api, pod)?;
        }
        Ok(())
    })?;
    Ok(added)
}

#[derive(Default)]
struct Churned {
    pods_per_sec: f64,
    added_ms: Vec<f64>,
    gone_ms: Vec<f64>,
}

/// For [`CHURN`]: every 1/[`CHURN_RATE`] s a new pod starts and the oldest of the node's stops,
/// so the node keeps its pod count. Pods are timed from sending their create to their entry,
/// and from their stop to its removal.
fn churn(
    api: &mut ApiLoad,
    installed: &Installed,
    cgroups: &PinnedMap,
    pods: Vec<BenchPod>,
) -> anyhow::Result<Churned> {
    let mut running: VecDeque<BenchPod> = pods.into();
    let interval = Duration::from_secs(1) / CHURN_RATE;
    let mut count = 0_u32;
    let (added_ms, gone_ms) = timed(cgroups, |poller| {
        let started = Instant::now();
        while started.elapsed() < CHURN {
            if started.elapsed() < interval * count {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            let (pod, sent) = start_pod(api, installed, &format!("churn-{count:05}"))?;
            poller.expect_entry(&pod, sent);
            running.push_back(pod);
            if let Some(old) = running.pop_front() {
                let id = old.cgroup.id().to_ne_bytes();
                poller
                    .going
                    .lock()
                    .expect("poller")
                    .push((id, Instant::now()));
                stop_pod(api, old)?;
            }
            count += 1;
        }
        Ok(())
    })?;
    for pod in running {
        stop_pod(api, pod)?;
    }
    Ok(Churned {
        pods_per_sec: f64::from(count) / CHURN.as_secs_f64(),
        added_ms,
        gone_ms,
    })
}

fn wait(timeout: Duration, what: &str, done: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("never happened: {what}")
}

/// As [`wait`], polling every 100 µs.
fn wait_fast(timeout: Duration, what: &str, done: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    bail!("never happened in time: {what}")
}
