use super::*;

const UID: &str = "3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8";
const UNDERSCORED: &str = "3f2a1b4c_5d6e_4f70_8192_a3b4c5d6e7f8";
const HASH: &str = "1b2c3d4e5f60718293a4b5c6d7e8f901";
const CONTAINER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn uids_parse_back_from_directory_names() {
    for name in [
        format!("kubepods-burstable-pod{UNDERSCORED}.slice"),
        format!("kubepods-pod{UNDERSCORED}.slice"),
        format!("kubelet-kubepods-besteffort-pod{UNDERSCORED}.slice"),
        format!("pod{UID}"),
    ] {
        assert_eq!(pod_uid_of(&name).as_deref(), Some(UID), "{name}");
    }
    assert_eq!(
        pod_uid_of(&format!("kubepods-besteffort-pod{HASH}.slice")).as_deref(),
        Some(HASH),
        "a static pod's config hash"
    );
    for name in [
        "kubepods-burstable.slice",
        "cri-containerd-abc.scope",
        "podnotauid",
        "kubepods",
        "ipod3f2a1b4c_5d6e_4f70_8192_a3b4c5d6e7f8.slice",
    ] {
        assert_eq!(pod_uid_of(name), None, "{name}");
    }
}

#[test]
fn container_ids_parse_from_every_runtime() {
    for name in [
        format!("cri-containerd-{CONTAINER}.scope"),
        format!("crio-{CONTAINER}.scope"),
        format!("docker-{CONTAINER}.scope"),
        CONTAINER.to_owned(),
    ] {
        assert_eq!(container_id_of(&name).as_deref(), Some(CONTAINER), "{name}");
    }
    assert_eq!(
        container_id_of(&format!("crio-conmon-{CONTAINER}.scope")),
        None
    );
    assert_eq!(
        container_id_of_status(&format!("containerd://{CONTAINER}")).as_deref(),
        Some(CONTAINER)
    );
}

fn tree(paths: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    for path in paths {
        std::fs::create_dir_all(root.path().join(path)).expect("mkdir");
    }
    root
}

#[test]
fn pods_are_found_in_every_layout() {
    let layouts = [
        format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UNDERSCORED}.slice"
        ),
        format!("kubepods/besteffort/pod{UID}"),
        format!("kubepods/pod{UID}"),
        // kind, systemd driver and cgroupfs driver
        format!(
            "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UNDERSCORED}.slice"
        ),
        format!("kubelet/kubepods/burstable/pod{UID}"),
        // a custom kubelet cgroupRoot
        format!("custom.slice/nested/kubepods/burstable/pod{UID}"),
    ];
    for layout in &layouts {
        let root = tree(&[layout, &format!("{layout}/crio-{CONTAINER}.scope")]);
        let found = PodCgroups::scan(&[root.path().to_owned()]);
        assert_eq!(found.of(UID, &[]), [root.path().join(layout)], "{layout}");
        let parent = root.path().join(layout);
        assert!(
            found.parents().contains(parent.parent().expect("parent")),
            "{layout}: its parent is watched"
        );
    }
}

#[test]
fn without_pod_cgroups_the_containers_are_selected() {
    let root = tree(&[
        &format!("system.slice/cri-containerd-{CONTAINER}.scope"),
        "system.slice/containerd.service",
    ]);
    let found = PodCgroups::scan(&[root.path().to_owned()]);
    assert_eq!(
        found.of(UID, &[CONTAINER.to_owned()]),
        [root
            .path()
            .join(format!("system.slice/cri-containerd-{CONTAINER}.scope"))]
    );
    assert!(found.of(UID, &[]).is_empty());
}

#[test]
fn ids_are_the_directories_inode_numbers() {
    use std::os::unix::fs::MetadataExt as _;
    let pod = format!("kubepods/burstable/pod{UID}");
    let container = format!("system.slice/cri-containerd-{CONTAINER}.scope");
    let root = tree(&[&pod, &container]);
    let found = PodCgroups::scan(&[root.path().to_owned()]);
    let ino = |path: &str| {
        std::fs::metadata(root.path().join(path))
            .expect("stat")
            .ino()
    };
    assert_eq!(found.ids_of(UID, &[]), [ino(&pod)]);
    assert_eq!(
        found.ids_of("another", &[CONTAINER.to_owned()]),
        [ino(&container)],
        "a pod without a pod cgroup: its containers"
    );
    assert!(found.ids_of("another", &[]).is_empty());
}
