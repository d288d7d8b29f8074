//! The agent's life: crashes, restarts, reloads, bad input, uninstall, limits.

use std::{fmt::Write as _, os::unix::fs::PermissionsExt as _};

use egress_tests::{Agent, Probe, World, kernel_tests_enabled};

/// Programs the agent attaches (one per hook).
const PROGRAMS: usize = egress_tests::cgroup::AGENT_ATTACH_TYPES.len();

/// (attach type, program id) of every program attached at `path`, from the kernel.
fn attachments_at(path: &std::path::Path) -> Vec<(u32, u32)> {
    egress_tests::cgroup::attached_programs(path)
}

fn program_ids(agent: &Agent) -> Vec<u64> {
    let stats = agent.maps_json("stats").expect("maps stats");
    stats["attachments"]
        .as_array()
        .expect("attachments")
        .iter()
        .map(|a| a["programId"].as_u64().expect("programId"))
        .collect()
}

#[test]
fn redirection_survives_sigkill() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let mut agent = world.start_web_agent();
    agent.stop_with(libc::SIGKILL);
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "gateway",
        "pinned state keeps working"
    );
    assert_eq!(
        Probe::run(&world.selected, "udp", &world.direct_addr()).reply(),
        "gateway:ping"
    );
}

#[test]
fn restart_adopts_pinned_state_with_one_attachment_per_hook() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let mut agent = world.start_web_agent();
    let before = program_ids(&agent);
    assert_eq!(before.len(), PROGRAMS, "every hook attached");
    let status = agent.stop_with(libc::SIGTERM);
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "gateway",
        "SIGTERM leaves the pinned state working"
    );
    agent.spawn();
    agent.wait_log(&format!("adopted={PROGRAMS} attached=0"));
    assert_eq!(
        program_ids(&agent),
        before,
        "the same programs stay attached"
    );
    let attached = attachments_at(world.root.path());
    let hooks: std::collections::BTreeSet<_> = attached.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        attached.len(),
        PROGRAMS,
        "exactly one attachment per hook: {attached:#?}"
    );
    assert_eq!(hooks.len(), PROGRAMS, "{attached:#?}");
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "gateway"
    );
}

#[test]
fn changing_the_attach_point_moves_every_link() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let agent = world.start_web_agent();
    let config = world.config(&world.web_rule()).replace(
        &format!("attach: {}", world.root.path().display()),
        &format!("attach: {}", world.selected.path().display()),
    );
    agent.write_config(&config);
    agent.wait_log(&format!("attached={PROGRAMS} removed={PROGRAMS}"));
    assert_eq!(
        attachments_at(world.root.path()),
        Vec::new(),
        "old attach point left clean"
    );
    assert_eq!(attachments_at(world.selected.path()).len(), PROGRAMS);
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "gateway"
    );
}

/// Rewrites the config without the web rule's UDP port and checks that UDP now goes direct.
fn drop_udp_from_the_web_rule(world: &World, agent: &Agent) {
    let tcp_only = world
        .web_rule()
        .lines()
        .filter(|l| !l.contains("UDP"))
        .collect::<Vec<_>>()
        .join("\n");
    agent.write_config(&world.config(&tcp_only));
    agent.wait_converged(1, 1);
    assert_eq!(
        Probe::run(&world.selected, "udp", &world.direct_addr()).reply(),
        "direct:ping"
    );
}

#[test]
fn invalid_reload_keeps_the_state_and_says_why() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let mut agent = world.start_web_agent();
    let before = agent.routes();
    let broken = world.web_rule().replace("protocol: UDP", "protocol: SCTP");
    agent.write_config(&world.config(&broken));
    agent.signal(libc::SIGHUP);
    agent.wait_log("config rejected");
    let log = agent.log();
    assert!(
        log.contains("rules[0].ports[1].protocol") && log.contains("line 8"),
        "error names field and line:\n{log}"
    );
    assert!(agent.is_running(), "a bad config must not stop the agent");
    assert_eq!(agent.routes(), before, "the previous state stays");
    // Still said after a few resyncs (every second here), while the file stays bad.
    std::thread::sleep(egress_tests::scaled(std::time::Duration::from_secs(3)));
    let status = agent.status().expect("status");
    assert!(
        status["agent"]["configError"]
            .as_str()
            .is_some_and(|e| e.contains("rules[0].ports[1].protocol")),
        "the rejection stays in the status until a valid edit: {status}"
    );
    assert_eq!(
        Probe::run(&world.selected, "udp", &world.direct_addr()).reply(),
        "gateway:ping"
    );

    // A valid edit is picked up from the file alone (no signal), adding and removing routes.
    drop_udp_from_the_web_rule(&world, &agent);
}

#[test]
fn an_idle_resync_computes_nothing_and_the_next_reload_still_lands() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let agent = world.start_web_agent();
    // The test agent resyncs every second; with the intent and the facts as last written, a
    // resync skips the computation.
    agent.wait_log("intent and facts unchanged since the last write");
    drop_udp_from_the_web_rule(&world, &agent);
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "gateway"
    );
}

#[test]
fn invalid_config_at_start_waits_for_a_valid_one() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let mut agent = Agent::start(
        &world.config("  - name: web\n    gateway: 127.0.0.3\n    ports: [{port: 80}]\n"),
    );
    agent.wait_log("config rejected");
    assert!(
        agent.log().contains("rules[0]") && agent.log().contains("hosts, addresses"),
        "{}",
        agent.log()
    );
    assert!(agent.is_running());
    agent.write_config(&world.config(&world.web_rule()));
    agent.wait_converged(2, 1);
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "gateway"
    );
}

#[test]
fn uninstall_leaves_nothing_behind() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let mut agent = world.start_web_agent();
    agent.stop_with(libc::SIGTERM);
    let output = agent.cli(&["uninstall"]);
    assert!(
        output.status.success(),
        "uninstall: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        attachments_at(world.root.path()),
        Vec::new(),
        "no program left attached"
    );
    assert!(
        !agent.bpffs_dir.exists(),
        "pin directory removed: {}",
        agent.bpffs_dir.display()
    );
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "direct"
    );
    let again = agent.cli(&["uninstall"]);
    assert!(again.status.success(), "uninstall is idempotent");
    let maps = agent.cli(&["maps", "routes"]);
    assert!(
        !maps.status.success(),
        "maps must fail when nothing is installed"
    );
    assert!(
        String::from_utf8_lossy(&maps.stderr).contains("no pinned maps"),
        "{maps:?}"
    );
}

#[test]
fn pinned_objects_are_root_only() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let agent = world.start_web_agent();
    for dir in [
        agent.bpffs_dir.clone(),
        agent.bpffs_dir.join("maps"),
        agent.bpffs_dir.join("links"),
    ] {
        let mode = std::fs::metadata(&dir).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
    }
    for entry in std::fs::read_dir(agent.bpffs_dir.join("maps"))
        .expect("maps dir")
        .flatten()
    {
        let mode = entry.metadata().expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", entry.path().display());
    }
}

#[test]
fn a_full_routes_map_gives_a_clear_error_and_keeps_running() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let capacity = 65_536; // egress_common::maps::CIDRS.max_entries
    // One more prefix than the prefix map holds: /31s in 127.128.0.0/9.
    let mut addresses = String::new();
    for i in 0..=capacity {
        let [_, b, c, d] = (0x7f80_0000_u32 + 2 * i).to_be_bytes();
        let _ = write!(addresses, "127.{b}.{c}.{d}/31,");
    }
    let rules = format!(
        "  - name: huge\n    gateway: 127.0.0.3\n    addresses: [{}]\n    ports: [{{port: {}}}]\n",
        addresses.trim_end_matches(','),
        world.direct.port()
    );
    let mut agent = Agent::start(&world.config(&rules));
    agent.wait_log(&format!(
        "map CIDRS is full ({capacity} entries): 1 entries were not installed"
    ));
    assert!(agent.is_running());
}

#[test]
fn maps_cli_prints_kubectl_style_tables() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let agent = world.start_web_agent();
    let routes = String::from_utf8(agent.cli(&["maps", "routes"]).stdout).expect("utf8");
    let header = routes.lines().next().unwrap_or_default();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "DESTINATION",
            "PORT",
            "PROTO",
            "GATEWAY",
            "RULE",
            "HOST",
            "SOURCE",
            "EXPIRES",
            "REDIRECTS"
        ]
    );
    let first = routes.lines().nth(1).unwrap_or_default();
    assert_eq!(
        first.split_whitespace().nth(5),
        Some("-"),
        "a static route has no host: {routes}"
    );
    assert!(
        routes.contains(&format!("127.0.0.3:{}", world.gateway.port())),
        "{routes}"
    );
    let cgroups = String::from_utf8(agent.cli(&["maps", "cgroups"]).stdout).expect("utf8");
    assert!(
        cgroups.contains("selected") && cgroups.contains("/selected"),
        "{cgroups}"
    );
    let json = agent.maps_json("cgroups").expect("cgroups json");
    assert_eq!(json["cgroups"][0]["id"], world.selected.id());
}

#[test]
fn explain_says_what_a_cgroup_does_with_a_host() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let agent = world.start_web_agent();
    let inner = world.selected.child("inner");
    let explain = |cgroup: &std::path::Path, host: &str| -> serde_json::Value {
        let cgroup = cgroup.display().to_string();
        let output = agent.cli(&["explain", "--cgroup", &cgroup, host, "-o", "json"]);
        assert!(
            output.status.success(),
            "explain: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("explain json")
    };
    let direct = world.direct_addr();
    let selected = explain(inner.path(), &direct);
    assert_eq!(selected["cgroup"]["mode"], "selected", "{selected:#}");
    assert!(
        selected["cgroup"]["entry"]
            .as_str()
            .is_some_and(|e| e.ends_with("/selected")),
        "the ancestor's entry applies: {selected:#}"
    );
    assert_eq!(selected["cgroup"]["rules"], serde_json::json!(["web"]));
    let verdict = selected["host"]["verdict"].as_str().unwrap_or_default();
    assert!(
        verdict.contains(&format!("127.0.0.3:{}", world.gateway.port()))
            && verdict.contains("rule web"),
        "{verdict}"
    );
    let other_port = explain(inner.path(), "127.0.0.2:1");
    assert!(
        other_port["host"]["verdict"]
            .as_str()
            .is_some_and(|v| v.contains("routed only on")),
        "{other_port:#}"
    );
    let unselected = explain(world.unselected.path(), &direct);
    assert_eq!(unselected["cgroup"]["mode"], "none");
    assert!(
        unselected["host"]["verdict"]
            .as_str()
            .is_some_and(|v| v.contains("not selected")),
        "{unselected:#}"
    );
    let text = agent.cli(&[
        "explain",
        "--cgroup",
        &inner.path().display().to_string(),
        &direct,
    ]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("verdict:") && text.contains("DESTINATION"),
        "{text}"
    );
}

#[test]
fn metrics_pass_promtool_and_count_what_the_datapath_did() {
    use std::io::{Read as _, Write as _};
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let agent = world.start_web_agent();
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "gateway"
    );
    let (code, classic) = agent.admin_get("/metrics");
    assert_eq!(code, 200);
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (package prometheus)");
    std::io::Write::write_all(
        &mut promtool.stdin.take().expect("stdin"),
        classic.as_bytes(),
    )
    .expect("write");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{classic}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        classic.lines().any(
            |l| l.starts_with("egress_agent_redirected_total{rule=\"web\"") && l.ends_with(" 1")
        ),
        "one redirect counted for rule web:\n{classic}"
    );
    assert!(
        classic.contains("egress_agent_routes{source=\"static\"} 1"),
        "{classic}"
    );
    // Prometheus itself asks for OpenMetrics.
    let mut stream = std::net::TcpStream::connect(agent.admin_addr).expect("connect");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(
        response.contains("application/openmetrics-text") && response.trim_end().ends_with("# EOF"),
        "{response}"
    );
    assert_eq!(agent.admin_get("/live").0, 200);
}

/// The DaemonSet's capabilities; `CAP_SYS_RESOURCE` (memlock) only matters below 5.11, where
/// BPF memory was still charged to `RLIMIT_MEMLOCK`.
fn daemonset_capabilities() -> &'static str {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version < (5, 11) {
        "bpf,net_admin,perfmon,sys_resource"
    } else {
        "bpf,net_admin,perfmon"
    }
}

#[test]
fn the_daemonsets_capabilities_are_enough_to_attach_adopt_and_redirect() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let config = world.config(&world.web_rule());
    let mut agent = Agent::start_with_capabilities(&config, daemonset_capabilities());
    agent.wait_converged(2, 1);
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "gateway"
    );
    agent.stop_with(libc::SIGTERM);
    agent.spawn();
    agent.wait_log(&format!("adopted={PROGRAMS} attached=0"));
    assert_eq!(
        attachments_at(world.root.path()).len(),
        PROGRAMS,
        "adopted without CAP_SYS_ADMIN: no second attachment"
    );
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "gateway"
    );
}
