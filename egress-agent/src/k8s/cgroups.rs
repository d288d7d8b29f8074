//! Finding pods' cgroups under the host's cgroup2 hierarchy, whatever the layout, and noticing
//! new ones the moment the kubelet creates them.
//!
//! The kubelet names a pod's cgroup after its UID, wherever it puts it:
//!
//! ```text
//! systemd:   kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid with _>.slice
//! cgroupfs:  kubepods/<qos>/pod<uid>
//! kind:      kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-<qos>.slice/...pod<uid _>.slice
//!            kubelet/kubepods/<qos>/pod<uid>
//! custom:    <cgroupRoot>/kubepods/...
//! static:    ...pod<32-hex config hash>...   (the mirror pod's `kubernetes.io/config.mirror`)
//! ```
//!
//! So the hierarchy (or the configured kubelet cgroup roots) is walked and every directory
//! whose name carries a pod UID is indexed. With `cgroupsPerQOS=false` there is no pod cgroup:
//! the pod's containers are found by their container IDs (`cri-containerd-<id>.scope`,
//! `crio-<id>.scope`, `docker-<id>.scope`, or a bare `<id>`), each selected on its own.
//! Container scopes inside a pod cgroup are covered by the pod's entry through the walk up.

use std::{
    collections::{BTreeSet, HashMap},
    os::unix::fs::DirEntryExt as _,
    path::{Path, PathBuf},
};

use inotify::{Inotify, WatchMask};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// How deep below a walk root pod and container cgroups are looked for.
const MAX_DEPTH: usize = 8;

/// A cgroup found by a walk.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Found {
    path: PathBuf,
    /// Its cgroup id: the directory's inode number, which the directory entry carries (so a
    /// walk costs no `stat` per pod).
    id: u64,
}

/// Pod and container cgroups found in one walk.
#[derive(Clone, Debug, Default)]
pub struct PodCgroups {
    pods: HashMap<String, Found>,
    containers: HashMap<String, Found>,
    /// Directories worth an inotify watch: those holding pod or container cgroups, and the
    /// kubelet's own (`*kubepods*`, `*kubelet*`).
    parents: BTreeSet<PathBuf>,
}

impl PodCgroups {
    /// Walks each of `roots` (absolute) for pod and container cgroups.
    pub fn scan(roots: &[PathBuf]) -> Self {
        let mut found = Self::default();
        for root in roots {
            found.parents.insert(root.clone());
            found.walk(root, 0);
        }
        found
    }

    fn walk(&mut self, dir: &Path, depth: usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            let found = || Found {
                path: path.clone(),
                id: entry.ino(),
            };
            if let Some(uid) = pod_uid_of(&name) {
                self.parents.insert(dir.to_owned());
                self.pods.insert(uid, found());
            } else if let Some(id) = container_id_of(&name) {
                self.parents.insert(dir.to_owned());
                self.containers.insert(id, found());
            } else if depth < MAX_DEPTH {
                if name.contains("kubepods") || name.contains("kubelet") {
                    self.parents.insert(path.clone());
                }
                self.walk(&path, depth + 1);
            }
        }
    }

    /// The cgroups of a pod: its pod cgroup, else (no pod cgroup, as with
    /// `cgroupsPerQOS=false`) its containers' cgroups. Empty when none is found.
    pub fn of(&self, uid: &str, container_ids: &[String]) -> Vec<PathBuf> {
        self.found(uid, container_ids)
            .map(|found| found.path.clone())
            .collect()
    }

    /// The cgroup ids of [`PodCgroups::of`]'s cgroups, as the walk saw them.
    pub fn ids_of(&self, uid: &str, container_ids: &[String]) -> Vec<u64> {
        self.found(uid, container_ids)
            .map(|found| found.id)
            .collect()
    }

    fn found<'a>(
        &'a self,
        uid: &str,
        container_ids: &'a [String],
    ) -> impl Iterator<Item = &'a Found> {
        let pod = self.pods.get(uid);
        let containers = container_ids
            .iter()
            .filter(move |_| pod.is_none())
            .filter_map(|id| self.containers.get(id));
        pod.into_iter().chain(containers)
    }

    /// The directories to watch for new pod cgroups.
    pub fn parents(&self) -> &BTreeSet<PathBuf> {
        &self.parents
    }
}

/// The pod UID named by a cgroup directory name: `pod<uid>`, or a systemd slice ending in
/// `-pod<uid with _>.slice`; the UID is a dashed UUID or a static pod's 32-hex config hash.
pub fn pod_uid_of(name: &str) -> Option<String> {
    let uid = if let Some(rest) = name.strip_suffix(".slice") {
        let (before, uid) = rest.rsplit_once("pod")?;
        if !before.is_empty() && !before.ends_with('-') {
            return None;
        }
        uid.replace('_', "-")
    } else {
        name.strip_prefix("pod")?.to_owned()
    };
    let dashed = uid.len() == 36
        && uid.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    let hash = uid.len() == 32 && uid.chars().all(|c| c.is_ascii_hexdigit());
    (dashed || hash).then_some(uid)
}

/// The container ID named by a cgroup directory name (`cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `docker-<id>.scope`, or a bare 64-hex `<id>`).
pub fn container_id_of(name: &str) -> Option<String> {
    let id = match name.strip_suffix(".scope") {
        Some(scope) => ["cri-containerd-", "crio-", "docker-"]
            .iter()
            .find_map(|prefix| scope.strip_prefix(prefix))?,
        None => name,
    };
    (id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_owned())
}

/// The container ID of a `containerStatuses[].containerID` (`containerd://<id>`).
pub fn container_id_of_status(container_id: &str) -> Option<String> {
    let id = container_id
        .rsplit_once("://")
        .map_or(container_id, |(_, id)| id);
    container_id_of(id)
}

/// Watches the directories pod cgroups appear in; each time something changes there it walks
/// again and sends what it found (the walk also finds new directories to watch). Runs on its own thread (inotify reads block), holding
/// `alive` until it ends (when the receiver is dropped, or inotify fails).
pub fn watch(
    first: &PodCgroups,
    roots: Vec<PathBuf>,
    alive: crate::health::Heartbeat,
) -> std::io::Result<mpsc::UnboundedReceiver<PodCgroups>> {
    let mut inotify = Inotify::init()?;
    let (sender, receiver) = mpsc::unbounded_channel();
    let mut watched = BTreeSet::new();
    add_watches(&mut inotify, first.parents(), &mut watched);
    std::thread::Builder::new()
        .name("cgroup-watch".into())
        .spawn(move || {
            let _alive = alive;
            let mut buffer = [0; 4096];
            loop {
                let changed = match inotify.read_events_blocking(&mut buffer) {
                    Ok(events) => events.count(),
                    Err(err) => {
                        warn!(error = %err, "cgroup watch stopped");
                        return;
                    }
                };
                debug!(changed, "cgroup directories changed");
                // New kubelet directories (a QoS slice, say) get watched too; what was created
                // in them before their watch existed is found by walking again.
                let mut found = PodCgroups::scan(&roots);
                while add_watches(&mut inotify, found.parents(), &mut watched) {
                    found = PodCgroups::scan(&roots);
                }
                if sender.send(found).is_err() {
                    return;
                }
            }
        })?;
    Ok(receiver)
}

/// Watches those of `dirs` not watched yet; whether it added any.
fn add_watches(
    inotify: &mut Inotify,
    dirs: &BTreeSet<PathBuf>,
    watched: &mut BTreeSet<PathBuf>,
) -> bool {
    let mut added = false;
    for dir in dirs {
        if watched.contains(dir) {
            continue;
        }
        match inotify.watches().add(
            dir,
            WatchMask::CREATE | WatchMask::DELETE | WatchMask::ONLYDIR,
        ) {
            Ok(_) => {
                watched.insert(dir.clone());
                added = true;
            }
            Err(err) => {
                warn!(path = %dir.display(), error = %err, "cannot watch cgroup directory");
            }
        }
    }
    added
}

#[cfg(test)]
#[path = "cgroups_tests.rs"]
mod tests;
