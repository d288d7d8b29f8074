//! Finding pods' cgroups under the host's cgroup2 hierarchy, for both kubelet cgroup drivers,
//! and noticing new ones the moment the kubelet creates them.
//!
//! ```text
//! systemd:   kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid with _>.slice
//!            kubepods.slice/kubepods-pod<uid with _>.slice            (Guaranteed)
//! cgroupfs:  kubepods/<qos>/pod<uid>
//!            kubepods/pod<uid>                                         (Guaranteed)
//! ```
//!
//! Container scopes (containerd, CRI-O) are children of the pod cgroup, so selecting the pod
//! cgroup covers them through the ancestor walk. The kubelet creates the pod cgroup before any
//! container starts; the inotify watch turns that mkdir into a reconcile within milliseconds.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use inotify::{Inotify, WatchMask};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{index::PodRef, model::QosClass};

/// The candidate cgroup paths of a pod, relative to the cgroup2 root.
pub fn pod_cgroup_paths(pod: &PodRef) -> [PathBuf; 2] {
    let underscored = pod.uid.replace('-', "_");
    match pod.qos {
        QosClass::Guaranteed => [
            PathBuf::from(format!("kubepods.slice/kubepods-pod{underscored}.slice")),
            PathBuf::from(format!("kubepods/pod{}", pod.uid)),
        ],
        QosClass::Burstable | QosClass::BestEffort => {
            let qos = if pod.qos == QosClass::Burstable {
                "burstable"
            } else {
                "besteffort"
            };
            [
                PathBuf::from(format!(
                    "kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{underscored}.slice"
                )),
                PathBuf::from(format!("kubepods/{qos}/pod{}", pod.uid)),
            ]
        }
    }
}

/// The pod's cgroup directory under `root`, if it exists.
pub fn find_pod_cgroup(root: &Path, pod: &PodRef) -> Option<PathBuf> {
    pod_cgroup_paths(pod)
        .into_iter()
        .map(|path| root.join(path))
        .find(|path| path.is_dir())
}

/// The pod UID named by a cgroup directory name (`pod<uid>` or `kubepods-...pod<uid_>.slice`).
pub fn pod_uid_of(name: &str) -> Option<String> {
    let uid = if let Some(rest) = name.strip_suffix(".slice") {
        rest.rsplit_once("pod")?.1.replace('_', "-")
    } else {
        name.strip_prefix("pod")?.to_owned()
    };
    let valid = uid.len() == 36 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    valid.then_some(uid)
}

/// The directories the kubelet creates pod cgroups in (and their parents), relative to root.
const WATCHED: [&str; 7] = [
    "",
    "kubepods.slice",
    "kubepods.slice/kubepods-burstable.slice",
    "kubepods.slice/kubepods-besteffort.slice",
    "kubepods",
    "kubepods/burstable",
    "kubepods/besteffort",
];

/// Watches `root` for pod cgroups appearing and disappearing; sends the pod UID of each.
/// Runs on its own thread (inotify reads block); ends when the receiver is dropped.
pub fn watch(root: PathBuf) -> std::io::Result<mpsc::UnboundedReceiver<String>> {
    let mut inotify = Inotify::init()?;
    let (sender, receiver) = mpsc::unbounded_channel();
    let mut watched = BTreeSet::new();
    for uid in add_watches(&mut inotify, &root, &mut watched) {
        let _ = sender.send(uid);
    }
    std::thread::Builder::new()
        .name("cgroup-watch".into())
        .spawn(move || {
            let mut buffer = [0; 4096];
            loop {
                let events = match inotify.read_events_blocking(&mut buffer) {
                    Ok(events) => events
                        .filter_map(|e| e.name.map(|n| n.to_string_lossy().into_owned()))
                        .collect::<Vec<_>>(),
                    Err(err) => {
                        warn!(error = %err, "cgroup watch stopped");
                        return;
                    }
                };
                // A new QoS or kubepods directory may have appeared: watch it too, and report pods
                // created inside it before the watch existed (`mkdir -p` outruns us).
                let mut uids: Vec<String> = add_watches(&mut inotify, &root, &mut watched);
                uids.extend(events.iter().filter_map(|name| pod_uid_of(name)));
                for uid in uids {
                    debug!(uid, "pod cgroup changed");
                    if sender.send(uid).is_err() {
                        return;
                    }
                }
            }
        })?;
    Ok(receiver)
}

/// Watches the kubelet's directories that exist now; returns the pods already inside the newly
/// watched ones.
fn add_watches(inotify: &mut Inotify, root: &Path, watched: &mut BTreeSet<PathBuf>) -> Vec<String> {
    let mut found = Vec::new();
    for dir in WATCHED {
        let path = root.join(dir);
        if watched.contains(&path) || !path.is_dir() {
            continue;
        }
        match inotify.watches().add(
            &path,
            WatchMask::CREATE | WatchMask::DELETE | WatchMask::ONLYDIR,
        ) {
            Ok(_) => {
                let entries = std::fs::read_dir(&path).into_iter().flatten().flatten();
                found.extend(
                    entries.filter_map(|entry| pod_uid_of(&entry.file_name().to_string_lossy())),
                );
                watched.insert(path);
            }
            Err(err) => {
                warn!(path = %path.display(), error = %err, "cannot watch cgroup directory");
            }
        }
    }
    found
}

#[cfg(test)]
#[path = "cgroups_tests.rs"]
mod tests;
