//! The fixture's kubelet (and scheduler): a loop that binds unscheduled pods to the node, runs
//! the pods bound to it ([`super::pod`]), probes their readiness from the node and writes their
//! status as the node's own identity (`system:node:node-1`, through the Node authorizer), and
//! stops the pods that are deleted.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Child, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};

use super::pod::{self, RunningPod};
use super::{NODE, netns, run_with_stdin};
use crate::TestCgroup;

/// Pods with this annotation are left alone: another part of the test plays their kubelet (the
/// benchmark's pods, which are only a cgroup).
pub const EXTERNAL: &str = "egress-tests/kubelet";

/// The node's cgroup root under the cgroup2 mount (what the agent's hostPath maps).
pub const CGROUP_ROOT: &str = "egk-cluster";

/// The node's cgroup hierarchy, as the kubelet's systemd driver lays it out.
#[derive(Debug)]
pub struct Cgroups {
    /// `kubepods-burstable.slice`.
    pub burstable: TestCgroup,
    /// `kubepods-besteffort.slice`.
    pub besteffort: TestCgroup,
    /// `kubepods.slice` (Guaranteed pods sit directly in it).
    pub kubepods: TestCgroup,
    /// The node's root ([`CGROUP_ROOT`]).
    pub root: TestCgroup,
}

impl Cgroups {
    /// Creates the hierarchy.
    pub fn new() -> Self {
        let root = TestCgroup::named(CGROUP_ROOT);
        let kubepods = root.child("kubepods.slice");
        Self {
            burstable: kubepods.child("kubepods-burstable.slice"),
            besteffort: kubepods.child("kubepods-besteffort.slice"),
            kubepods,
            root,
        }
    }
}

impl Default for Cgroups {
    fn default() -> Self {
        Self::new()
    }
}

/// What the kubelet needs of the cluster (shared with its thread).
#[derive(Clone, Debug)]
pub struct Context {
    /// The components' binary (for kubectl).
    pub bin: PathBuf,
    /// The directory holding `egress-agent` and the suite's helpers.
    pub ours: PathBuf,
    /// The node's network namespace.
    pub node_netns: String,
    /// The admin's kubeconfig (scheduling, tokens, deletes).
    pub admin: PathBuf,
    /// The node's kubeconfig (status).
    pub node: PathBuf,
    /// The cluster CA (mounted with tokens).
    pub ca: PathBuf,
    /// Where pods' logs and secrets go.
    pub dir: PathBuf,
    /// The node's cgroups.
    pub kubepods: PathBuf,
}

impl Context {
    /// kubectl as `kubeconfig`, with `stdin`.
    pub fn kubectl(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = netns::Netns::command_in(&self.node_netns, &self.bin);
        command
            .arg("kubectl")
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args);
        run_with_stdin(&mut command, stdin)
    }
}

impl Context {
    /// Writes `status` (`{"status": {...}}`, merged key by key) into the object `get` names, as
    /// the node: a GET and a PUT of `path/status`, which the Node authorizer allows (a PATCH
    /// through kubectl would first GET the status subresource, which it does not). Retried on
    /// conflicts.
    pub fn put_status(&self, get: &[&str], path: &str, status: &Value) -> Output {
        let mut args = vec!["get"];
        args.extend_from_slice(get);
        args.extend_from_slice(&["-o", "json"]);
        let mut last = None;
        for _ in 0..5 {
            let out = self.kubectl(&self.node, &args, None);
            let Ok(mut object) = serde_json::from_slice::<Value>(&out.stdout) else {
                last = Some(out);
                continue;
            };
            for (key, value) in status["status"].as_object().into_iter().flatten() {
                object["status"][key] = value.clone();
            }
            let out = self.kubectl(
                &self.node,
                &["replace", "--raw", &format!("{path}/status"), "-f", "-"],
                Some(&object.to_string()),
            );
            if out.status.success() {
                return out;
            }
            last = Some(out);
        }
        last.expect("tried")
    }
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) pods: BTreeMap<String, RunningPod>,
    pub(super) next: u32,
    /// Mount points this kubelet created on the host for hostPath volumes.
    pub(super) created_dirs: Vec<PathBuf>,
}

/// The kubelet; its loop runs until dropped.
pub struct Kubelet {
    context: Context,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Kubelet {
    /// Registers the node and starts the loop.
    pub fn start(context: Context, cgroups: &Cgroups) -> Self {
        register_node(&context);
        let state = Arc::new(Mutex::new(State {
            next: 10,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let kubepods = Kubepods {
            burstable: cgroups.burstable.path().to_owned(),
            besteffort: cgroups.besteffort.path().to_owned(),
            guaranteed: cgroups.kubepods.path().to_owned(),
        };
        let thread = {
            let (context, state, stop) = (context.clone(), state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    sync(&context, &kubepods, &state);
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        };
        Self {
            context,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// Runs `argv` in the running pod `namespace/name` (its netns and cgroup), as
    /// `kubectl exec` would; `None` when the pod does not run here.
    pub fn exec(&self, namespace: &str, name: &str, argv: &[&str]) -> Option<Output> {
        let mut command = {
            let state = self.state.lock().expect("kubelet state");
            let pod = state.pods.get(&format!("{namespace}/{name}"))?;
            let argv: Vec<&OsStr> = argv.iter().map(OsStr::new).collect();
            pod.command("", &argv)
        };
        Some(run_with_stdin(&mut command, None))
    }

    /// Starts `argv` in the pod without waiting (output to `log`).
    pub fn spawn(&self, namespace: &str, name: &str, argv: &[&str], log: &Path) -> Option<Child> {
        let state = self.state.lock().expect("kubelet state");
        let pod = state.pods.get(&format!("{namespace}/{name}"))?;
        let argv: Vec<&OsStr> = argv.iter().map(OsStr::new).collect();
        let mut command = pod.command("", &argv);
        let file = std::fs::File::create(log).ok()?;
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone().ok()?)
            .stderr(file)
            .spawn()
            .ok()
    }

    /// Sends `signal` to container `container` of the running pod `namespace/name`; false when
    /// it does not run here.
    pub fn signal(&self, namespace: &str, name: &str, container: &str, signal: i32) -> bool {
        let state = self.state.lock().expect("kubelet state");
        let Some(pod) = state.pods.get(&format!("{namespace}/{name}")) else {
            return false;
        };
        pod.containers
            .iter()
            .filter(|c| c.name == container)
            .inspect(|c| c.signal(signal))
            .count()
            > 0
    }

    /// The process id of container `container` of the running pod `namespace/name`.
    pub fn pid(&self, namespace: &str, name: &str, container: &str) -> Option<u32> {
        let state = self.state.lock().expect("kubelet state");
        let pod = state.pods.get(&format!("{namespace}/{name}"))?;
        pod.containers
            .iter()
            .find(|c| c.name == container)
            .and_then(|c| c.child.as_ref())
            .map(Child::id)
    }

    /// How often container `container` of `namespace/name` was started again.
    pub fn restarts(&self, namespace: &str, name: &str, container: &str) -> Option<u32> {
        let state = self.state.lock().expect("kubelet state");
        let pod = state.pods.get(&format!("{namespace}/{name}"))?;
        pod.containers
            .iter()
            .find(|c| c.name == container)
            .map(|c| c.restarts)
    }

    /// The running pod's IP.
    pub fn pod_ip(&self, namespace: &str, name: &str) -> Option<String> {
        let state = self.state.lock().expect("kubelet state");
        state
            .pods
            .get(&format!("{namespace}/{name}"))
            .map(|p| p.ip.clone())
    }

    /// The names of running pods in `namespace` whose name starts with `prefix`.
    pub fn running(&self, namespace: &str, prefix: &str) -> Vec<String> {
        let state = self.state.lock().expect("kubelet state");
        state
            .pods
            .keys()
            .filter_map(|key| key.strip_prefix(&format!("{namespace}/")))
            .filter(|name| name.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    /// The context (for kubectl as the node).
    pub fn context(&self) -> &Context {
        &self.context
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let mut state = self.state.lock().expect("kubelet state");
        let pods = std::mem::take(&mut state.pods);
        for (_, pod) in pods {
            pod::teardown(pod, Duration::ZERO);
        }
        // Deepest first (each was pushed before its parents).
        for dir in &state.created_dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

pub(super) struct Kubepods {
    pub(super) burstable: PathBuf,
    pub(super) besteffort: PathBuf,
    pub(super) guaranteed: PathBuf,
}

fn register_node(context: &Context) {
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux"}},
    });
    let out = context.kubectl(
        &context.node,
        &["create", "-f", "-"],
        Some(&node.to_string()),
    );
    netns::check(&out, "register the node");
    let status = json!({"status": {
        "addresses": [{"type": "InternalIP", "address": netns::NODE_IP}, {"type": "Hostname", "address": NODE}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "the test fixture's kubelet"}],
        "capacity": {"cpu": "2", "memory": "24Gi", "pods": "250"},
        "allocatable": {"cpu": "2", "memory": "24Gi", "pods": "250"},
    }});
    let out = context.put_status(&["node", NODE], &format!("/api/v1/nodes/{NODE}"), &status);
    netns::check(&out, "the node's status");
}

/// One pass: schedule, start, probe, stop.
fn sync(context: &Context, kubepods: &Kubepods, state: &Mutex<State>) {
    let out = context.kubectl(&context.admin, &["get", "pods", "-A", "-o", "json"], None);
    if !out.status.success() {
        return;
    }
    let Ok(list) = serde_json::from_slice::<Value>(&out.stdout) else {
        return;
    };
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let mut seen = Vec::new();
    for pod in &items {
        let (namespace, name) = (
            pod["metadata"]["namespace"].as_str().unwrap_or_default(),
            pod["metadata"]["name"].as_str().unwrap_or_default(),
        );
        if !pod["metadata"]["annotations"][EXTERNAL].is_null() {
            continue;
        }
        let key = format!("{namespace}/{name}");
        let deleting = pod["metadata"]["deletionTimestamp"].is_string();
        match pod["spec"]["nodeName"].as_str() {
            None if !deleting => bind(context, namespace, name),
            Some(NODE) => {
                seen.push(key.clone());
                let running = state.lock().expect("state").pods.contains_key(&key);
                if deleting {
                    let removed = state.lock().expect("state").pods.remove(&key);
                    if let Some(running) = removed {
                        let grace = running.grace;
                        pod::teardown(running, grace);
                    }
                    force_delete(context, namespace, name);
                } else if !running && pod["status"]["phase"] != "Succeeded" {
                    pod::start(context, kubepods, state, pod);
                }
            }
            _ => {}
        }
    }
    let gone: Vec<String> = {
        let state = state.lock().expect("state");
        state
            .pods
            .keys()
            .filter(|k| !seen.contains(k))
            .cloned()
            .collect()
    };
    for key in gone {
        let removed = state.lock().expect("state").pods.remove(&key);
        if let Some(pod) = removed {
            pod::teardown(pod, Duration::ZERO);
        }
    }
    restart_exited(state);
    probe(context, state, &items);
}

/// Starts again the containers that exited, as the kubelet does for `restartPolicy: Always`
/// (without its back-off: the suite kills agents on purpose).
fn restart_exited(state: &Mutex<State>) {
    let mut state = state.lock().expect("state");
    for pod in state.pods.values_mut().filter(|p| p.restart) {
        let key = pod.key.clone();
        for container in &mut pod.containers {
            if container.exited() {
                container.restarts += 1;
                eprintln!(
                    "kubelet: {key}: container {} exited; starting it again",
                    container.name
                );
                container.start(&key);
            }
        }
    }
}

fn bind(context: &Context, namespace: &str, name: &str) {
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}
    });
    let _ = context.kubectl(
        &context.admin,
        &[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/{namespace}/pods/{name}/binding"),
            "-f",
            "-",
        ],
        Some(&binding.to_string()),
    );
}

fn force_delete(context: &Context, namespace: &str, name: &str) {
    let _ = context.kubectl(
        &context.admin,
        &[
            "delete",
            "pod",
            "-n",
            namespace,
            name,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ],
        None,
    );
}

/// Runs readiness probes from the node and writes the pods whose readiness changed.
fn probe(context: &Context, state: &Mutex<State>, items: &[Value]) {
    let checks: Vec<(String, String, String, String, u16)> = {
        let state = state.lock().expect("state");
        state
            .pods
            .values()
            .filter_map(|p| {
                let (path, port) = p.probe.clone()?;
                Some((
                    p.key.clone(),
                    p.ip.clone(),
                    p.container_id.clone(),
                    path,
                    port,
                ))
            })
            .collect()
    };
    for (key, ip, id, path, port) in checks {
        let ok = netns::Netns::command_in(&context.node_netns, "curl")
            .args(["-sf", "-m", "2", &format!("http://{ip}:{port}{path}")])
            .output()
            .is_ok_and(|o| o.status.success());
        let changed = {
            let mut state = state.lock().expect("state");
            state.pods.get_mut(&key).is_some_and(|p| {
                let changed = p.ready != ok;
                p.ready = ok;
                changed
            })
        };
        let pod = items.iter().find(|p| {
            p["metadata"]["namespace"]
                .as_str()
                .zip(p["metadata"]["name"].as_str())
                .is_some_and(|(namespace, name)| key == format!("{namespace}/{name}"))
        });
        if changed && let Some(pod) = pod {
            pod::write_status(context, pod, &ip, &id, ok);
        }
    }
}
