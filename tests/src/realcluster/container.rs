//! A container's process: its `command` and `args` (the image's entrypoint for the agent's
//! image) with the container's environment (`fieldRef`, `configMapKeyRef`, `$(VAR)`), its
//! capabilities (`setpriv`), its `hostPath` and `ConfigMap` volumes and a service-account token
//! from the `TokenRequest` API at `/var/run/secrets/kubernetes.io/serviceaccount`, in a private
//! mount namespace. Images are not pulled: the programs are this machine's.

use std::{
    ffi::OsStr,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

use serde_json::Value;

use super::{
    NODE,
    kubelet::{Context, State},
    pki::KUBERNETES_SERVICE_IP,
    pod::RunningPod,
};

/// The environment every container gets: the kubernetes Service's, as the kubelet injects.
pub(super) fn base_env() -> Vec<(String, String)> {
    vec![
        (
            "KUBERNETES_SERVICE_HOST".to_owned(),
            KUBERNETES_SERVICE_IP.to_owned(),
        ),
        ("KUBERNETES_SERVICE_PORT".to_owned(), "443".to_owned()),
        ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
    ]
}

/// A token for the pod's service account from the `TokenRequest` API, bound to the pod, with
/// the CA and namespace beside it; `None` when the pod opts out.
pub(super) fn service_account(context: &Context, pod: &Value, n: u32) -> Option<PathBuf> {
    if pod["spec"]["automountServiceAccountToken"] == false {
        return None;
    }
    let namespace = pod["metadata"]["namespace"].as_str()?;
    let account = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    let out = context.kubectl(
        &context.admin,
        &[
            "create",
            "token",
            account,
            "-n",
            namespace,
            "--bound-object-kind=Pod",
            &format!("--bound-object-name={}", pod["metadata"]["name"].as_str()?),
            &format!("--bound-object-uid={}", pod["metadata"]["uid"].as_str()?),
            "--duration=2h",
        ],
        None,
    );
    if !out.status.success() {
        eprintln!(
            "kubelet: no token for {namespace}/{account}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let dir = context.dir.join(format!("secrets-{n}"));
    std::fs::create_dir_all(&dir).ok()?;
    std::fs::write(dir.join("token"), out.stdout.trim_ascii()).ok()?;
    std::fs::copy(&context.ca, dir.join("ca.crt")).ok()?;
    std::fs::write(dir.join("namespace"), namespace).ok()?;
    Some(dir)
}

/// The program of a container and the arguments it starts with: its command, else the image's
/// entrypoint (the agent's image). The agent and the workspace's test programs come from the
/// build, `CoreDNS` from the cluster's binary, anything else from this machine's PATH.
fn program(context: &Context, spec: &Value) -> (PathBuf, Vec<String>) {
    let first = spec["command"]
        .as_array()
        .and_then(|c| c.first())
        .and_then(Value::as_str);
    let name = match first {
        Some(path) => Path::new(path)
            .file_name()
            .map_or_else(|| path.to_owned(), |n| n.to_string_lossy().into_owned()),
        None if spec["image"]
            .as_str()
            .is_some_and(|i| i.contains("egress-agent")) =>
        {
            "egress-agent".to_owned()
        }
        // The pause image's entrypoint waits forever.
        None if spec["image"]
            .as_str()
            .is_some_and(|i| i.contains("/pause:")) =>
        {
            return (PathBuf::from("sleep"), vec!["infinity".to_owned()]);
        }
        None => return (PathBuf::from("/bin/true"), Vec::new()),
    };
    match name.as_str() {
        "egress-agent" => (context.ours.join("egress-agent"), Vec::new()),
        "coredns" => (context.bin.clone(), vec!["coredns".to_owned()]),
        _ => {
            let ours = context.ours.join(&name);
            if ours.exists() {
                (ours, Vec::new())
            } else {
                (PathBuf::from(first.unwrap_or(&name)), Vec::new())
            }
        }
    }
}

/// The container's process: in the pod's netns and cgroup, with a private mount namespace for
/// its service-account token and hostPath volumes, and its capabilities.
pub(super) fn container_command(
    context: &Context,
    state: &Mutex<State>,
    pod: &Value,
    spec: &Value,
    base: &[(String, String)],
    secrets: Option<&Path>,
    running: &RunningPod,
) -> Command {
    let mut env: Vec<(String, String)> = base.to_vec();
    for var in spec["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default().to_owned();
        let value = if let Some(value) = var["value"].as_str() {
            expand(value, &env)
        } else if let Some(path) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "spec.nodeName" => NODE.to_owned(),
                "status.podIP" => running.ip.clone(),
                "metadata.namespace" => pod["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                "metadata.name" => pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                _ => String::new(),
            }
        } else if let Some(key) = var["valueFrom"]["configMapKeyRef"].as_object() {
            config_map_key(context, pod, key).unwrap_or_default()
        } else {
            String::new()
        };
        env.push((name, value));
    }
    let argv: Vec<String> = spec["command"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(1)
        .chain(spec["args"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .map(|arg| expand(arg, &env))
        .collect();
    let (program, prefix) = program(context, spec);
    // The mount namespace: the token and each hostPath that lands somewhere else.
    let mut script = String::new();
    if let Some(secrets) = secrets {
        let _ = write!(
            script,
            "mount -t tmpfs -o mode=0755 tmpfs /run\nmkdir -p /run/secrets/kubernetes.io/serviceaccount\ncp {}/* /run/secrets/kubernetes.io/serviceaccount/\n",
            secrets.display()
        );
    }
    let volumes = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for mount in spec["volumeMounts"].as_array().into_iter().flatten() {
        let Some(volume) = volumes.iter().find(|v| v["name"] == mount["name"]) else {
            continue;
        };
        let source = if let Some(host) = volume["hostPath"]["path"].as_str() {
            // The node's /sys/fs/cgroup is its cgroup root in the host's hierarchy.
            if host == "/sys/fs/cgroup" {
                context.kubepods.parent().expect("node root").to_owned()
            } else {
                PathBuf::from(host)
            }
        } else if let Some(name) = volume["configMap"]["name"].as_str() {
            let Some(dir) = config_map_files(context, pod, name) else {
                continue;
            };
            dir
        } else {
            continue;
        };
        let target = PathBuf::from(mount["mountPath"].as_str().unwrap_or_default());
        if source == target {
            continue;
        }
        let mut missing = target.clone();
        while !missing.parent().is_some_and(Path::exists) {
            missing.pop();
        }
        if !target.exists() {
            std::fs::create_dir_all(&target).expect("mkdir a hostPath mount point");
            // Removed on the way back up, from the mount point to the first one created.
            let mut created = state.lock().expect("state");
            let mut dir = target.clone();
            while dir.starts_with(&missing) {
                created.created_dirs.push(dir.clone());
                if !dir.pop() {
                    break;
                }
            }
        }
        let ro = if mount["readOnly"] == true { ",ro" } else { "" };
        let _ = write!(
            script,
            "mount --bind {} {}\nmount -o remount,bind{ro} {} || true\n",
            source.display(),
            target.display(),
            target.display()
        );
    }
    let mut argv_full: Vec<std::ffi::OsString> = Vec::new();
    let capabilities = &spec["securityContext"]["capabilities"];
    if capabilities["drop"]
        .as_array()
        .is_some_and(|d| d.iter().any(|c| c == "ALL"))
    {
        let added: Vec<String> = capabilities["add"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|c| held(c))
            .map(|c| format!("+{}", c.to_lowercase()))
            .collect();
        let set = format!("-all,{}", added.join(","));
        argv_full.extend(
            [
                "setpriv".to_owned(),
                "--reuid=0".to_owned(),
                format!("--inh-caps={set}"),
                format!("--ambient-caps={set}"),
                format!("--bounding-set={set}"),
            ]
            .map(Into::into),
        );
    }
    argv_full.push(program.into());
    argv_full.extend(prefix.into_iter().chain(argv).map(Into::into));
    let argv_ref: Vec<&OsStr> = argv_full
        .iter()
        .map(std::ffi::OsString::as_os_str)
        .collect();
    let mut command = running.command(&script, &argv_ref);
    command.env_clear().envs(env);
    command
}

/// Whether this process may pass on the capability `name` (its bounding set has it). This
/// machine's sandbox lacks `SYS_RESOURCE`, which the agent needs only before Linux 5.11; a
/// runtime would grant it, here it is left out.
fn held(name: &str) -> bool {
    let bit = match name {
        "NET_BIND_SERVICE" => 10,
        "NET_ADMIN" => 12,
        "NET_RAW" => 13,
        "SYS_ADMIN" => 21,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        _ => return true,
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << bit) != 0)
}

/// `$(VAR)` references, as the kubelet expands them.
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = text.to_owned();
    for (name, value) in env.iter().rev() {
        out = out.replace(&format!("$({name})"), value);
    }
    out
}

/// A `ConfigMap`'s keys as files in a directory of the fixture's.
fn config_map_files(context: &Context, pod: &Value, name: &str) -> Option<PathBuf> {
    let namespace = pod["metadata"]["namespace"].as_str()?;
    let out = context.kubectl(
        &context.admin,
        &["get", "configmap", "-n", namespace, name, "-o", "json"],
        None,
    );
    let map: Value = serde_json::from_slice(&out.stdout).ok()?;
    let dir = context.dir.join(format!("configmap-{namespace}-{name}"));
    std::fs::create_dir_all(&dir).ok()?;
    for (key, value) in map["data"].as_object()? {
        std::fs::write(dir.join(key), value.as_str()?).ok()?;
    }
    Some(dir)
}

fn config_map_key(
    context: &Context,
    pod: &Value,
    key: &serde_json::Map<String, Value>,
) -> Option<String> {
    let namespace = pod["metadata"]["namespace"].as_str()?;
    let out = context.kubectl(
        &context.admin,
        &[
            "get",
            "configmap",
            "-n",
            namespace,
            key["name"].as_str()?,
            "-o",
            "json",
        ],
        None,
    );
    let map: Value = serde_json::from_slice(&out.stdout).ok()?;
    map["data"][key["key"].as_str()?]
        .as_str()
        .map(str::to_owned)
}
