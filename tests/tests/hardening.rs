//! The datapath's hard cases, on the real kernel: reverse translation that outlives any number
//! of other redirects, per-family gateways, QUIC, `io_uring`, upgrades from the previous map
//! layout, a full map, and configuration the selection walk cannot honour.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
};

use egress_tests::{
    Agent, Probe, Server, World,
    bpf::{HASH, LPM_TRIE, NO_PREALLOC, PinnedMap},
    kernel_tests_enabled, workspace_bin,
};

/// A rule for the direct server's addresses (IPv4 and `::1`) with `gateway` (YAML) on its
/// port.
fn rule(world: &World, gateway: &str, extra: &str) -> String {
    format!(
        "  - name: web\n    gateway: {gateway}\n    addresses: [127.0.0.2, '::1']\n    ports:\n      - {{port: {p}, gatewayPort: {g}}}\n{extra}",
        p = world.direct.port(),
        g = world.gateway.port()
    )
}

#[test]
fn a_connected_udp_socket_keeps_its_translation_after_200000_other_redirects() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let agent = world.start_web_agent();
    let mut command = Command::new(workspace_bin("egress-probe"));
    command
        .args(["udp-hold", &world.direct_addr()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    world.selected.enter(&mut command);
    let mut holder = command.spawn().expect("udp-hold probe");
    let mut lines = BufReader::new(holder.stdout.take().expect("stdout")).lines();
    let first: serde_json::Value =
        serde_json::from_str(&lines.next().expect("first line").expect("read")).expect("json");
    assert_eq!(first["reply"], "gateway:first", "{first}");
    assert_eq!(first["peer"], world.direct_addr(), "{first}");

    // 200,000 other redirected connections from the same cgroup.
    let mut crr_command = Command::new(workspace_bin("egress-probe"));
    crr_command.args(["crr", &world.direct_addr(), "200000"]);
    world.selected.enter(&mut crr_command);
    let other = crr_command.output().expect("crr");
    assert!(other.status.success(), "{other:?}");
    let redirected = agent
        .maps_json("stats")
        .and_then(|s| s["counters"]["redirected"].as_u64())
        .unwrap_or(0);
    assert!(redirected > 200_000, "{redirected} redirects counted");

    writeln!(holder.stdin.take().expect("stdin")).expect("wake the holder");
    let second: serde_json::Value =
        serde_json::from_str(&lines.next().expect("second line").expect("read")).expect("json");
    assert_eq!(
        second["reply"], "gateway:second",
        "the reply still arrives, from the original address: {second}"
    );
    assert_eq!(second["peer"], world.direct_addr(), "{second}");
    let _ = holder.wait();
}

#[test]
fn each_socket_uses_the_gateway_of_its_family_or_is_refused() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let _direct6 = Server::bind("::1", world.direct.port(), "direct6").expect("[::1] direct");
    let _gateway6 = Server::bind("::1", world.gateway.port(), "gateway6").expect("[::1] gateway");
    let v4 = world.direct_addr();
    let mapped = format!("[::ffff:127.0.0.2]:{}", world.direct.port());
    let v6 = format!("[::1]:{}", world.direct.port());
    let reply_from = |mode: &str, addr: &str| {
        let probe = Probe::run(&world.selected, mode, addr);
        if probe.ok {
            Ok(probe.reply)
        } else {
            Err(probe.errno)
        }
    };
    let reply = |addr: &str| reply_from("tcp", addr);

    let both = Agent::start(&world.config(&rule(&world, "[127.0.0.3, '::1']", "")));
    both.wait_until("routes", |routes, _| !routes.is_empty());
    assert_eq!(reply(&v4).as_deref(), Ok("gateway"));
    assert_eq!(
        reply(&mapped).as_deref(),
        Ok("gateway"),
        "v4-mapped on a v6 socket"
    );
    assert_eq!(reply(&v6).as_deref(), Ok("gateway6"));
    drop(both);

    let only_v4 = Agent::start(&world.config(&rule(&world, "127.0.0.3", "")));
    only_v4.wait_until("routes", |routes, _| !routes.is_empty());
    assert_eq!(
        reply(&mapped).as_deref(),
        Ok("gateway"),
        "the v4 gateway, v4-mapped"
    );
    assert_eq!(
        reply(&v6).as_deref(),
        Ok("gateway"),
        "a dual-stack v6 socket reaches the v4 gateway through its v4-mapped address"
    );
    assert_eq!(
        reply_from("tcp-v6only", &v6),
        Err(Some(libc::EPERM)),
        "an IPV6_V6ONLY socket cannot reach a v4 gateway: refused, never direct"
    );
    drop(only_v4);

    let only_v6 = Agent::start(&world.config(&rule(&world, "'::1'", "")));
    only_v6.wait_until("routes", |routes, _| !routes.is_empty());
    assert_eq!(
        reply(&v4),
        Err(Some(libc::EPERM)),
        "a v4 socket with only a v6 gateway is refused, never direct"
    );
    assert_eq!(reply(&v6).as_deref(), Ok("gateway6"));
    let refused = only_v6
        .maps_json("stats")
        .and_then(|s| s["counters"]["family_mismatch"].as_u64())
        .unwrap_or(0);
    assert!(refused >= 1, "counted as a family mismatch");
}

#[test]
fn quic_is_refused_where_tcp_443_is_redirected_unless_turned_off() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let quic = Server::bind("127.0.0.2", 443, "direct").expect("127.0.0.2:443");
    let _gateway443 = Server::bind("127.0.0.3", 443, "gateway").expect("127.0.0.3:443");
    let https = |extra: &str| {
        format!(
            "  - name: web\n    gateway: 127.0.0.3\n    addresses: [127.0.0.2]\n    ports: [{{port: 443}}]\n{extra}"
        )
    };
    let agent = Agent::start(&world.config(&https("")));
    agent.wait_until("routes", |routes, _| !routes.is_empty());
    let addr = quic.addr.to_string();
    assert_eq!(Probe::run(&world.selected, "tcp", &addr).reply(), "gateway");
    let udp = Probe::run(&world.selected, "udp", &addr);
    assert_eq!(
        (udp.ok, udp.errno),
        (false, Some(libc::EPERM)),
        "HTTP/3 is refused, so the client falls back to TCP: {udp:?}"
    );
    let unselected = Probe::run(&world.unselected, "udp", &addr);
    assert!(
        unselected.ok,
        "other workloads are untouched: {unselected:?}"
    );
    agent.write_config(&world.config(&https("    refuseQuic: false\n")));
    agent.wait_until("QUIC allowed", |routes, _| {
        routes.iter().all(|r| r["protocol"] != "UDP")
    });
    assert_eq!(
        Probe::run(&world.selected, "udp", &addr).reply(),
        "direct:ping",
        "turned off: UDP 443 goes its own way"
    );
}

#[test]
fn an_io_uring_connect_in_a_worker_is_redirected() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let _agent = world.start_web_agent();
    let probe = Probe::run(&world.selected, "uring-connect", &world.direct_addr());
    assert_eq!(
        probe.reply(),
        "gateway",
        "IORING_OP_CONNECT with IOSQE_ASYNC from a selected task: {probe:?}"
    );
    assert_eq!(
        probe.peer,
        world.direct_addr(),
        "and getpeername is translated back"
    );
    let direct = Probe::run(&world.unselected, "uring-connect", &world.direct_addr());
    assert_eq!(direct.reply(), "direct");
}

/// A layout-1 route: LPM key (prefix length, proto, reserved, port, IPv4 address) and a value
/// holding the route id at byte 24.
fn layout_1_route(routes: &PinnedMap, port: u16, address: [u8; 4], route: u32) {
    let mut key = Vec::new();
    key.extend_from_slice(&64_u32.to_ne_bytes());
    key.extend_from_slice(&[6, 0]);
    key.extend_from_slice(&port.to_be_bytes());
    key.extend_from_slice(&address);
    let mut value = [0_u8; 32];
    value[24..28].copy_from_slice(&route.to_ne_bytes());
    routes.update(&key, &value);
}

#[test]
fn an_upgrade_from_layout_1_keeps_hostname_routes_while_dns_is_down() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    // DNS is down: nothing listens on this port.
    let config = format!(
        "{}dns:\n  servers: ['127.0.0.1:9']\n",
        world.config(&format!(
            "  - name: web\n    gateway: 127.0.0.3\n    hosts: [web.test]\n    ports: [{{port: {}, gatewayPort: {}}}]\n",
            world.direct.port(),
            world.gateway.port()
        ))
    );
    let mut agent = Agent::unstarted(&config);
    // What a layout-1 agent left pinned: web.test resolved to 127.0.0.2.
    let maps = agent.bpffs_dir.join("maps");
    let hosts = PinnedMap::create(&maps.join("ROUTE_HOSTS"), HASH, 4, 256, 1024, 0);
    let mut label = [0_u8; 256];
    label[..8].copy_from_slice(b"web.test");
    hosts.update(&7_u32.to_ne_bytes(), &label);
    let routes = PinnedMap::create(&maps.join("ROUTES_V4"), LPM_TRIE, 12, 32, 1024, NO_PREALLOC);
    layout_1_route(&routes, world.direct.port(), [127, 0, 0, 2], 7);
    drop((hosts, routes));

    agent.spawn();
    agent.wait_until("the carried address routed", |routes, _| {
        routes
            .iter()
            .any(|r| r["destination"] == "127.0.0.2/32" && r["host"] == "web.test")
    });
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "gateway",
        "the address layout 1 had resolved is still redirected while DNS is down"
    );
    assert!(
        agent.log().contains("carrying resolved addresses over"),
        "{}",
        agent.log()
    );
    assert!(
        !maps.join("ROUTES_V4").exists(),
        "the old layout's maps are unpinned once the new programs are in"
    );
}

/// `CLOCK_MONOTONIC` now, in ns (the clock learned entries expire by).
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    u64::try_from(now.tv_sec).expect("positive") * 1_000_000_000
        + u64::try_from(now.tv_nsec).expect("positive")
}

/// A `LEARNED` key: scope, then the IPv4-mapped address.
fn learned_key(scope: u64, address: [u8; 4]) -> Vec<u8> {
    let mut key = scope.to_ne_bytes().to_vec();
    key.extend_from_slice(&egress_common::v4_mapped(address));
    key
}

/// A `LEARNED` value: set, source, expiry.
fn learned_value(set: u32, source: u32, expires_ns: u64) -> Vec<u8> {
    let mut value = set.to_ne_bytes().to_vec();
    value.extend_from_slice(&source.to_ne_bytes());
    value.extend_from_slice(&expires_ns.to_ne_bytes());
    value
}

/// An agent of layout 2 learned an address of a wildcard (which no agent resolves) for a pod;
/// the upgraded agent (layout 3) carries it over, so the pod's next connection to it is still
/// redirected, with no new DNS answer.
#[test]
fn an_upgrade_from_layout_2_keeps_what_pods_learned() {
    use egress_common::{label_kind, maps, source};
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let config = world.config(&format!(
        "  - name: web\n    gateway: 127.0.0.3\n    hosts: ['*.web.test']\n    ports: [{{port: {}, gatewayPort: {}}}]\n",
        world.direct.port(),
        world.gateway.port()
    ));
    let mut agent = Agent::unstarted(&config);
    // What a layout-2 agent left pinned: the maps this binary reads as its own (not the socket
    // storage, whose values grew), with pattern 5, `*.web.test`, learned as 127.0.0.2 by the
    // selected cgroup.
    let old = agent.bpffs_dir.join("maps/v2");
    let readable = [
        maps::CONFIG,
        maps::CGROUPS,
        maps::ADDRESSES,
        maps::LEARNED,
        maps::CIDRS,
        maps::TARGETS,
        maps::PATTERNS,
        maps::TRUSTED,
        maps::COUNTERS,
        maps::STATS,
        maps::LABELS,
        maps::RESOLVED,
    ];
    let pinned: Vec<PinnedMap> = readable
        .iter()
        .map(|def| {
            PinnedMap::create(
                &old.join(def.name),
                def.kind as u32,
                def.key_size,
                def.value_size,
                def.max_entries,
                def.flags,
            )
        })
        .collect();
    let (learned, labels) = (&pinned[3], &pinned[10]);
    let mut key = label_kind::PATTERN.to_ne_bytes().to_vec();
    key.extend_from_slice(&5_u32.to_ne_bytes());
    let mut label = [0_u8; 256];
    label[..10].copy_from_slice(b"*.web.test");
    labels.update(&key, &label);
    let expires = monotonic_ns() + 300_000_000_000;
    learned.update(
        &learned_key(world.selected.id(), [127, 0, 0, 2]),
        &learned_value(5, source::LEARNED, expires),
    );
    learned.update(
        &learned_key(egress_common::MARKER_SCOPE, [127, 0, 0, 2]),
        &learned_value(5, source::MARKER, expires),
    );
    drop(pinned);

    agent.spawn();
    agent.wait_status("programs attached", |s| s["agent"]["attached"] == true);
    agent.wait_until("the carried learned address routed", |routes, _| {
        routes
            .iter()
            .any(|r| r["destination"] == "127.0.0.2/32" && r["source"] == "learned")
    });
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "gateway",
        "the address the pod learned under layout 2 is still redirected"
    );
    assert_eq!(
        Probe::run(&world.unselected, "tcp", &world.direct_addr()).reply(),
        "direct"
    );
    assert!(
        agent.log().contains("carried learned addresses over"),
        "{}",
        agent.log()
    );
    assert!(
        !old.exists(),
        "the old layout's maps are unpinned once the new programs are in"
    );
}

#[test]
fn replacing_a_full_map_removes_the_stale_entries_first() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let capacity = 65_536_u32; // egress_common::maps::CIDRS.max_entries
    let prefixes = |base: u32| {
        let mut text = String::new();
        for i in 0..capacity {
            let [_, b, c, d] = (base + 2 * i).to_be_bytes();
            let _ = write!(text, "127.{b}.{c}.{d}/31,");
        }
        format!(
            "  - name: huge\n    gateway: 127.0.0.3\n    addresses: [{}]\n    ports: [{{port: {}}}]\n",
            text.trim_end_matches(','),
            world.direct.port()
        )
    };
    // Exactly full, then every entry replaced by another.
    let agent = Agent::start(&world.config(&prefixes(0x7f80_0000)));
    agent.wait_status("full", |s| s["agent"]["routes"] == capacity);
    agent.write_config(&world.config(&prefixes(0x7fc0_0000)));
    agent.wait_status("replaced", |s| {
        s["agent"]["routes"] == capacity && s["agent"]["reconcileError"].is_null()
    });
    assert!(!agent.log().contains("is full"), "{}", agent.log());
}

#[test]
fn a_cgroup_deeper_than_the_walk_is_a_config_error() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let mut deep = Vec::new();
    let mut path = world.selected.path().to_owned();
    for level in 0..16 {
        path = path.join(format!("l{level}"));
        deep.push(path.clone());
    }
    std::fs::create_dir_all(&path).expect("mkdir deep");
    let config = world.config(&world.web_rule()).replace(
        &world.selected.path().display().to_string(),
        &path.display().to_string(),
    );
    let mut agent = Agent::start(&config);
    agent.wait_log("config rejected");
    assert!(
        agent.log().contains("deeper than the 16 levels"),
        "{}",
        agent.log()
    );
    assert!(agent.is_running());
    drop(agent);
    for dir in deep.iter().rev() {
        let _ = std::fs::remove_dir(dir);
    }
}
