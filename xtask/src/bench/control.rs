//! The control plane in Kubernetes mode, against the list/watch test server: a cluster of
//! 10,000 namespaces, 10,000 Services and EndpointSlices (none a gateway's) and 110 pods on
//! this node. Measured: the agent's RSS and idle CPU, policy change → maps, pod cgroup created
//! → entry in the cgroups map (500 pods), and CPU under pod churn.
//!
//! Map entries are timed by polling the pinned maps directly (a `bpf()` lookup every 100 µs),
//! not through the CLI.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::bail;
use egress_tests::{
    DnsServer,
    bpf::PinnedMap,
    cluster::{self, Node},
    kube::FakeApi,
};
use serde_json::{Value, json};

use super::env;
use crate::shell::release_bin;

/// Cluster size.
pub(crate) const NAMESPACES: usize = 10_000;
pub(crate) const SERVICES: usize = 10_000;
pub(crate) const LOCAL_PODS: usize = 110;
/// Pods created one by one for the cgroup → map latency.
pub(crate) const NEW_PODS: usize = 500;
/// Policy changes timed.
pub(crate) const POLICY_CHANGES: usize = 50;
/// How long idle CPU and churn are sampled.
pub(crate) const SAMPLE: Duration = Duration::from_secs(20);

/// What this part measured.
pub(crate) struct ControlResult {
    pub(crate) rss_mib: f64,
    pub(crate) idle_cpu: f64,
    pub(crate) churn_cpu: f64,
    pub(crate) churn_pods_per_sec: f64,
    pub(crate) policy_ms: Vec<f64>,
    pub(crate) pod_ms: Vec<f64>,
}

/// The agent in Kubernetes mode; dropping it stops it and uninstalls.
struct KubeAgent {
    child: Child,
    bpffs_dir: PathBuf,
}

impl Drop for KubeAgent {
    fn drop(&mut self) {
        env::stop_and_uninstall(&mut self.child, &self.bpffs_dir);
    }
}

fn uid(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// Runs this part.
pub(crate) fn run() -> anyhow::Result<ControlResult> {
    let node = Node::new();
    let dns = DnsServer::start(300, &[("web.test", "127.0.0.2")], &[]);
    let api = FakeApi::start();
    populate(&api)?;
    let mut pods = Vec::new();
    for n in 0..LOCAL_PODS {
        pods.push(node.pod(&uid(n)));
    }
    let bpffs_dir = PathBuf::from("/sys/fs/bpf/egress-bench-k8s");
    let log = std::env::temp_dir().join("egress-bench-k8s.log");
    let agent = KubeAgent {
        child: Command::new(release_bin("egress-agent"))
            .args(["run", "--node-name", cluster::NODE, "--kubeconfig"])
            .arg(api.kubeconfig())
            .arg("--cgroup-root")
            .arg(node.root.path())
            .args(["--dns-server", &dns.addr(), "--trusted-namespace", "gw"])
            .args(["--admin-addr", "off", "--bpffs-dir"])
            .arg(&bpffs_dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?,
        bpffs_dir,
    };
    let cgroups = wait_for_map(&agent.bpffs_dir.join("maps/v2/CGROUPS"))?;
    wait(Duration::from_mins(2), "the local pods selected", || {
        pods.iter()
            .all(|p| cgroups.lookup(&p.pod.id().to_ne_bytes(), 8).is_some())
    })?;
    println!("bench: Kubernetes mode settled with {LOCAL_PODS} pods; sampling");
    std::thread::sleep(Duration::from_secs(5));
    let pid = agent.child.id();
    let idle_cpu = env::cpu_share(pid, SAMPLE)?;
    let targets = PinnedMap::open(&agent.bpffs_dir.join("maps/v2/TARGETS"));
    let policy_ms = policy_changes(&api, &targets)?;
    let pod_ms = new_pods(&node, &cgroups)?;
    let rss_mib = env::rss_mib(pid)?;
    let (churn_cpu, churn_pods_per_sec) = churn(&api, &node, pid)?;
    drop((agent, pods));
    Ok(ControlResult {
        rss_mib,
        idle_cpu,
        churn_cpu,
        churn_pods_per_sec,
        policy_ms,
        pod_ms,
    })
}

/// The cluster: namespaces, Services and slices nobody points at, the gateway, a policy, and
/// this node's pods in the API.
fn populate(api: &FakeApi) -> anyhow::Result<()> {
    let redirect = json!({"egress-agent.io/redirect": "true"});
    let mut objects = vec![
        cluster::namespace("gw", &json!({})),
        cluster::namespace("apps", &redirect),
    ];
    for n in 0..NAMESPACES {
        objects.push(cluster::namespace(
            &format!("ns-{n:05}"),
            &json!({"team": format!("t{}", n % 50)}),
        ));
    }
    for n in 0..SERVICES {
        let namespace = format!("ns-{:05}", n % NAMESPACES);
        let name = format!("svc-{n:05}");
        let [_, b, c, d] = (0x0a60_0000_u32 + u32::try_from(n)?).to_be_bytes();
        objects.push(cluster::service(
            &namespace,
            &name,
            &format!("10.{b}.{c}.{d}"),
            &[80],
            &json!({}),
        ));
        objects.push(cluster::endpoints(&namespace, &name, &[]));
    }
    objects.push(cluster::service(
        "gw",
        "egress-gw",
        "127.0.0.3",
        &[8443],
        &json!({}),
    ));
    objects.push(cluster::endpoints("gw", "egress-gw", &[]));
    objects.push(cluster::policy(
        "gw",
        "web",
        "egress-gw",
        &["web.test"],
        9_000,
        8443,
    ));
    for n in 0..LOCAL_PODS + NEW_PODS {
        objects.push(cluster::pod(
            "apps",
            &format!("pod-{n:04}"),
            &uid(n),
            &json!({}),
        ));
    }
    for chunk in objects.chunks(2_000) {
        api.apply_many(chunk);
    }
    println!("bench: the test API server holds {} objects", objects.len());
    Ok(())
}

/// Changes the policy's port `POLICY_CHANGES` times; ms until the new target is in the map.
fn policy_changes(api: &FakeApi, targets: &PinnedMap) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::new();
    for change in 0..POLICY_CHANGES {
        let port = 10_000 + u16::try_from(change)?;
        api.apply(&cluster::policy(
            "gw",
            "web",
            "egress-gw",
            &["web.test"],
            port,
            8443,
        ));
        let started = Instant::now();
        let wanted = port.to_be_bytes();
        wait_fast(Duration::from_secs(10), "the new port in TARGETS", || {
            targets.keys(12).iter().any(|key| key[10..12] == wanted)
        })?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(times)
}

/// Creates `NEW_PODS` pod cgroups one by one (their pods are already in the API, as when the
/// kubelet starts them); ms from the mkdir to the entry in the cgroups map.
fn new_pods(node: &Node, cgroups: &PinnedMap) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::new();
    let mut created = Vec::new();
    for n in LOCAL_PODS..LOCAL_PODS + NEW_PODS {
        let started = Instant::now();
        let pod = node.pod(&uid(n));
        let id = pod.pod.id().to_ne_bytes();
        wait_fast(Duration::from_secs(10), "a new pod's entry", || {
            cgroups.lookup(&id, 8).is_some()
        })?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        created.push(pod);
    }
    Ok(times)
}

/// Pods appearing and going (API object and cgroup) for [`SAMPLE`]: the agent's CPU share and
/// the churn rate.
fn churn(api: &FakeApi, node: &Node, pid: u32) -> anyhow::Result<(f64, f64)> {
    let before = env::cpu_seconds(pid)?;
    let started = Instant::now();
    let mut count = 0_u32;
    while started.elapsed() < SAMPLE {
        let n = 100_000 + usize::try_from(count)?;
        let object: Value = cluster::pod("apps", &format!("churn-{n}"), &uid(n), &json!({}));
        api.apply(&object);
        let pod = node.pod(&uid(n));
        std::thread::sleep(Duration::from_millis(50));
        drop(pod);
        api.delete(&object);
        count += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok((
        (env::cpu_seconds(pid)? - before) / elapsed,
        f64::from(count) / elapsed,
    ))
}

fn wait_for_map(path: &std::path::Path) -> anyhow::Result<PinnedMap> {
    wait(Duration::from_mins(1), "the pinned maps", || path.exists())?;
    Ok(PinnedMap::open(path))
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
