//! Pod cgroup discovery on directories laid out as the kubelet's systemd and cgroupfs drivers
//! lay them out: under a test subtree of the real cgroup2 mount as root (which must then be
//! found), else of the temp directory, so a plain `cargo test` needs no root.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use egress_agent::{
    cgroupfs::Hierarchy,
    health::Health,
    k8s::cgroups::{PodCgroups, watch},
};

use egress_tests::scaled;

struct Subtree(PathBuf);

impl Subtree {
    /// A fresh subtree of the real cgroup2 mount when running as root; otherwise (a plain
    /// `cargo test`, or `EGRESS_SKIP_KERNEL_TESTS=1`) of the temp directory, where walking and
    /// inotify behave the same for directories made and removed.
    fn new(label: &str) -> Self {
        let name = format!("egress-test-{}-{label}", std::process::id());
        // SAFETY: no preconditions.
        let root_user = unsafe { libc::geteuid() } == 0;
        let skip = std::env::var("EGRESS_SKIP_KERNEL_TESTS").is_ok_and(|v| v == "1");
        let parent = if root_user && !skip {
            Hierarchy::discover()
                .unwrap_or_else(|err| panic!("cgroup2: {err}"))
                .mount()
                .to_owned()
        } else {
            std::env::temp_dir()
        };
        let root = parent.join(name);
        std::fs::create_dir_all(&root)
            .unwrap_or_else(|err| panic!("mkdir {}: {err}", root.display()));
        Self(root)
    }

    fn mkdir(&self, relative: &str) -> PathBuf {
        let path = self.0.join(relative);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|err| panic!("mkdir {}: {err}", path.display()));
        path
    }
}

impl Drop for Subtree {
    fn drop(&mut self) {
        // Remove deepest first.
        let mut dirs = Vec::new();
        collect(&self.0, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect(&entry.path(), out);
        }
    }
}

const UID_A: &str = "11111111-2222-4333-8444-555555555555";
const UID_B: &str = "66666666-7777-4888-9999-aaaaaaaaaaaa";

#[test]
fn finds_pod_cgroups_in_real_cgroup_directories() {
    let tree = Subtree::new("find");
    let systemd = tree.mkdir("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod11111111_2222_4333_8444_555555555555.slice");
    tree.mkdir("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod11111111_2222_4333_8444_555555555555.slice/cri-containerd-abc.scope");
    let kind = tree.mkdir("kubelet/kubepods/pod66666666-7777-4888-9999-aaaaaaaaaaaa");
    let found = PodCgroups::scan(std::slice::from_ref(&tree.0));
    assert_eq!(found.of(UID_A, &[]), [systemd]);
    assert_eq!(found.of(UID_B, &[]), [kind], "a nested (kind) layout");
    assert!(
        found
            .of("00000000-0000-4000-8000-000000000000", &[])
            .is_empty()
    );
}

#[test]
fn the_watch_reports_pod_cgroups_as_they_appear_even_inside_new_parents() {
    let tree = Subtree::new("watch");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let roots = vec![tree.0.clone()];
        let health = Health::default();
        let first = PodCgroups::scan(&roots);
        let mut events = watch(&first, roots.clone(), health.register("watch", Duration::MAX))
            .unwrap_or_else(|err| panic!("inotify: {err}"));
        // The kubelet's whole chain appears at once: parents and pod cgroup in one mkdir -p.
        tree.mkdir("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod11111111_2222_4333_8444_555555555555.slice");
        // A report may come while `mkdir -p` is half done; a later one holds the pod.
        let deadline = tokio::time::Instant::now() + scaled(Duration::from_secs(2));
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Ok(Some(found)) = tokio::time::timeout(left, events.recv()).await else {
                panic!("no report held the new pod");
            };
            if found.of(UID_A, &[]).len() == 1 {
                break;
            }
        }
        // And a cgroupfs-layout pod later, inside directories watched since the first change.
        tree.mkdir("kubepods/burstable/pod66666666-7777-4888-9999-aaaaaaaaaaaa");
        let deadline = tokio::time::Instant::now() + scaled(Duration::from_secs(3));
        while PodCgroups::scan(&roots).of(UID_B, &[]).is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                tokio::time::timeout(left, events.recv()).await.is_ok(),
                "cgroupfs pod reported"
            );
        }
        assert!(health.problems().is_empty(), "the watch thread runs");
    });
}
