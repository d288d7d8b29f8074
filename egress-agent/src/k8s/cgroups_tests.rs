use super::*;

const UID: &str = "3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8";

#[test]
fn paths_for_both_drivers_and_every_qos() {
    let pod = |qos| PodRef {
        uid: UID.to_owned(),
        qos,
    };
    let cases = [
        (
            QosClass::Guaranteed,
            "kubepods.slice/kubepods-pod3f2a1b4c_5d6e_4f70_8192_a3b4c5d6e7f8.slice",
            "kubepods/pod3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8",
        ),
        (
            QosClass::Burstable,
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod3f2a1b4c_5d6e_4f70_8192_a3b4c5d6e7f8.slice",
            "kubepods/burstable/pod3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8",
        ),
        (
            QosClass::BestEffort,
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3f2a1b4c_5d6e_4f70_8192_a3b4c5d6e7f8.slice",
            "kubepods/besteffort/pod3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8",
        ),
    ];
    for (qos, systemd, cgroupfs) in cases {
        let [a, b] = pod_cgroup_paths(&pod(qos));
        assert_eq!(
            (a.to_str(), b.to_str()),
            (Some(systemd), Some(cgroupfs)),
            "{qos:?}"
        );
    }
}

#[test]
fn uids_parse_back_from_directory_names() {
    for name in [
        "kubepods-burstable-pod3f2a1b4c_5d6e_4f70_8192_a3b4c5d6e7f8.slice",
        "kubepods-pod3f2a1b4c_5d6e_4f70_8192_a3b4c5d6e7f8.slice",
        "pod3f2a1b4c-5d6e-4f70-8192-a3b4c5d6e7f8",
    ] {
        assert_eq!(pod_uid_of(name).as_deref(), Some(UID), "{name}");
    }
    for name in [
        "kubepods-burstable.slice",
        "cri-containerd-abc.scope",
        "podnotauid",
        "kubepods",
    ] {
        assert_eq!(pod_uid_of(name), None, "{name}");
    }
}
