use super::*;

#[test]
fn finds_cgroup2_on_a_hybrid_host() {
    let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    assert_eq!(
        parse_cgroup2_mount(mountinfo),
        Some(PathBuf::from("/sys/fs/cgroup/unified"))
    );
}

#[test]
fn finds_cgroup2_with_optional_fields_and_escapes() {
    let mountinfo =
        "29 1 0:26 / /run/my\\040cgroups rw shared:4 master:1 - cgroup2 cgroup2 rw,nsdelegate\n";
    assert_eq!(
        parse_cgroup2_mount(mountinfo),
        Some(PathBuf::from("/run/my cgroups"))
    );
    assert_eq!(
        parse_cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/vda rw\n"),
        None
    );
}

#[test]
fn resolves_paths_onto_the_mount() {
    let hierarchy = Hierarchy::new(PathBuf::from("/sys/fs/cgroup/unified"));
    let cases = [
        (
            "system.slice/a.service",
            Some("/sys/fs/cgroup/unified/system.slice/a.service"),
        ),
        ("/sys/fs/cgroup/unified/x", Some("/sys/fs/cgroup/unified/x")),
        (
            "/sys/fs/cgroup/kubepods.slice",
            Some("/sys/fs/cgroup/unified/kubepods.slice"),
        ),
        ("/tmp/x", None),
    ];
    for (input, expected) in cases {
        let got = hierarchy.resolve(Path::new(input)).ok();
        assert_eq!(got.as_deref(), expected.map(Path::new), "resolving {input}");
    }
}
