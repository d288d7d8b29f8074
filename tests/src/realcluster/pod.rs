//! A pod as the fixture's kubelet runs it: a network namespace with a veth to the node and an
//! IP from the pod network, a cgroup of the kubelet's systemd layout
//! (`kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/cri-containerd-<id>.scope`)
//! created before any container starts, its containers' processes, and its status.

use std::{
    ffi::OsStr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{
    DNS_SERVICE_IP, PREFIX, container,
    kubelet::{Context, Kubepods, State},
    netns,
};
use crate::TestCgroup;

impl RunningPod {
    /// `argv` to be started as the pod's: in its network namespace and container cgroup, in a
    /// private mount namespace where `setup` (shell lines) runs first and /etc/resolv.conf is
    /// the pod's.
    pub(crate) fn command(&self, setup: &str, argv: &[&OsStr]) -> Command {
        let script = format!(
            "set -e\n{setup}mount --bind {} /etc/resolv.conf\nexec \"$@\"\n",
            self.resolv.display()
        );
        let mut command = self.netns.command("unshare");
        command
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .args(argv);
        self.container.enter(&mut command);
        command
    }
}

/// A container's process and how to start it again.
#[derive(Debug)]
pub(crate) struct Container {
    /// The container's name.
    pub(crate) name: String,
    /// What starts it (its log file stays open in it, so a restart appends).
    command: Command,
    /// The running process.
    pub(crate) child: Option<Child>,
    /// How often it was started again.
    pub(crate) restarts: u32,
}

impl Container {
    /// Starts (or starts again) the process.
    pub(crate) fn start(&mut self, pod: &str) {
        match self.command.spawn() {
            Ok(child) => self.child = Some(child),
            Err(err) => eprintln!("kubelet: {pod}: container {}: {err}", self.name),
        }
    }

    /// Sends `signal` to the process, if it runs.
    pub(crate) fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: signalling a process we started and have not reaped.
            unsafe { libc::kill(child.id().cast_signed(), signal) };
        }
    }

    /// Whether the process has exited (and is reaped).
    pub(crate) fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|child| child.try_wait().ok().flatten().is_some())
    }
}

/// A pod this kubelet runs.
#[derive(Debug)]
pub(crate) struct RunningPod {
    /// `namespace/name`.
    pub(crate) key: String,
    /// Its IP.
    pub(crate) ip: String,
    /// Its network namespace.
    pub(crate) netns: netns::Netns,
    /// Its container's cgroup, where its processes run.
    pub(crate) container: TestCgroup,
    /// Its pod cgroup.
    pub(crate) cgroup: TestCgroup,
    /// Its (one) container's id, as the runtime would name it.
    pub(crate) container_id: String,
    /// The pod's resolv.conf (the cluster DNS), bound over /etc/resolv.conf for its processes.
    pub(crate) resolv: PathBuf,
    /// Its containers' processes, by container name, with the command that (re)starts them.
    pub(crate) containers: Vec<Container>,
    /// Whether exited containers are started again (`restartPolicy` is not `Never`).
    pub(crate) restart: bool,
    pub(crate) ready: bool,
    pub(crate) probe: Option<(String, u16)>,
    pub(crate) grace: Duration,
}

pub(super) fn write_status(
    context: &Context,
    pod: &Value,
    ip: &str,
    container_id: &str,
    ready: bool,
) {
    let now = now_rfc3339();
    let ready = if ready { "True" } else { "False" };
    let containers: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!({
            "name": c["name"], "image": c["image"], "imageID": "", "ready": ready == "True",
            "started": true, "restartCount": 0, "containerID": format!("containerd://{container_id}"),
            "state": {"running": {"startedAt": now}}
        }))
        .collect();
    let status = json!({"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "hostIP": netns::NODE_IP, "hostIPs": [{"ip": netns::NODE_IP}], "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": ready},
            {"type": "Ready", "status": ready},
        ],
        "containerStatuses": containers,
    }});
    let (namespace, name) = (
        pod["metadata"]["namespace"].as_str().unwrap_or_default(),
        pod["metadata"]["name"].as_str().unwrap_or_default(),
    );
    let out = context.put_status(
        &["pod", "-n", namespace, name],
        &format!("/api/v1/namespaces/{namespace}/pods/{name}"),
        &status,
    );
    if !out.status.success() {
        eprintln!("kubelet: status: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Stops a pod's processes (SIGTERM, then SIGKILL after `grace`) and removes its netns and
/// cgroups.
pub(super) fn teardown(mut pod: RunningPod, grace: Duration) {
    for container in &pod.containers {
        container.signal(libc::SIGTERM);
    }
    let until = Instant::now() + grace;
    for child in pod.containers.iter_mut().filter_map(|c| c.child.as_mut()) {
        while Instant::now() < until && child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    super::kill_cgroup(pod.cgroup.path());
}

fn now_rfc3339() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Starts `pod`: its network namespace and cgroups, then its init containers (to completion)
/// and containers, then its status.
pub(super) fn start(context: &Context, kubepods: &Kubepods, state: &Mutex<State>, pod: &Value) {
    let n = {
        let mut state = state.lock().expect("state");
        state.next += 1;
        state.next
    };
    let mut running = sandbox(context, kubepods, pod, n);
    let env = container::base_env();
    let secrets = container::service_account(context, pod, n);
    for init in pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let mut command = logged_command(
            context,
            state,
            pod,
            init,
            &env,
            secrets.as_deref(),
            &running,
        );
        let _ = command.status();
    }
    for spec in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let command = logged_command(
            context,
            state,
            pod,
            spec,
            &env,
            secrets.as_deref(),
            &running,
        );
        let mut container = Container {
            name: spec["name"].as_str().unwrap_or("main").to_owned(),
            command,
            child: None,
            restarts: 0,
        };
        container.start(&running.key);
        running.containers.push(container);
        if let Some(probe) = readiness_probe(spec) {
            running.probe = Some(probe);
            running.ready = false;
        }
    }
    let (ip, id, ready) = (
        running.ip.clone(),
        running.container_id.clone(),
        running.ready,
    );
    state
        .lock()
        .expect("state")
        .pods
        .insert(running.key.clone(), running);
    write_status(context, pod, &ip, &id, ready);
}

/// A container's process, its output appended to `logs/pod-<namespace>-<pod>-<container>.log`.
fn logged_command(
    context: &Context,
    state: &Mutex<State>,
    pod: &Value,
    spec: &Value,
    env: &[(String, String)],
    secrets: Option<&std::path::Path>,
    running: &RunningPod,
) -> Command {
    let file = context.dir.join("logs").join(format!(
        "pod-{}-{}.log",
        running.key.replace('/', "-"),
        spec["name"].as_str().unwrap_or("main")
    ));
    let file = std::fs::File::create(file).expect("create a container log");
    let mut command =
        container::container_command(context, state, pod, spec, env, secrets, running);
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file);
    command
}

/// The pod's network namespace (the `n`th pod's IP), its resolv.conf, and its cgroups: the pod's
/// first, as the kubelet does, so the agent selects it before any container starts.
fn sandbox(context: &Context, kubepods: &Kubepods, pod: &Value, n: u32) -> RunningPod {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let ip = format!("10.244.{}.{}", n / 250, n % 250);
    let netns_name = format!("{PREFIX}-p{n}");
    let resolv = context.dir.join(format!("resolv-{netns_name}.conf"));
    std::fs::write(
        &resolv,
        format!(
            "search {namespace}.svc.cluster.local svc.cluster.local cluster.local\nnameserver {DNS_SERVICE_IP}\noptions ndots:5\n"
        ),
    )
    .expect("write resolv.conf");
    let netns = netns::pod(
        &context.node_netns,
        &netns_name,
        &format!("{PREFIX}v{n}"),
        &ip,
    );
    let uid_ = uid.replace('-', "_");
    let (parent, slice) = match pod["status"]["qosClass"].as_str() {
        Some("Guaranteed") => (&kubepods.guaranteed, format!("kubepods-pod{uid_}.slice")),
        Some("Burstable") => (
            &kubepods.burstable,
            format!("kubepods-burstable-pod{uid_}.slice"),
        ),
        _ => (
            &kubepods.besteffort,
            format!("kubepods-besteffort-pod{uid_}.slice"),
        ),
    };
    let cgroup = TestCgroup::at(parent.join(slice));
    let container_id = format!("{:0>64}", uid.replace('-', ""));
    let container = cgroup.child(&format!("cri-containerd-{container_id}.scope"));
    RunningPod {
        key: format!("{namespace}/{name}"),
        ip,
        netns,
        container,
        cgroup,
        container_id,
        resolv,
        containers: Vec::new(),
        restart: pod["spec"]["restartPolicy"] != "Never",
        ready: true,
        probe: None,
        grace: Duration::from_secs(
            pod["spec"]["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30),
        ),
    }
}

/// A container's `httpGet` readiness probe: its path and port (a named port looked up).
fn readiness_probe(spec: &Value) -> Option<(String, u16)> {
    let probe = spec["readinessProbe"]["httpGet"].as_object()?;
    let port = match &probe["port"] {
        Value::Number(n) => n.as_u64(),
        Value::String(named) => spec["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == named.as_str())
            .and_then(|p| p["containerPort"].as_u64()),
        _ => None,
    };
    let port = u16::try_from(port?).ok()?;
    Some((probe["path"].as_str().unwrap_or("/").to_owned(), port))
}
