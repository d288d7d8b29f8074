//! The redirect datapath against the real kernel: real programs attached to real cgroups, real
//! sockets in real client processes, loopback only.

use std::{fmt::Write as _, time::Duration};

use egress_tests::{Agent, Probe, Server, World, kernel_tests_enabled};
use serde_json::Value;

#[test]
fn tcp_connect_is_redirected_and_counted() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let agent = world.start_web_agent();
    let probe = Probe::run(&world.selected, "tcp", &world.direct_addr());
    assert_eq!(
        probe.reply(),
        "gateway",
        "selected task must reach the gateway"
    );
    assert_eq!(
        probe.peer,
        world.direct_addr(),
        "getpeername must report the original destination"
    );
    agent.wait_until("one TCP redirect counted", |routes, _| {
        routes
            .iter()
            .any(|r| r["protocol"] == "TCP" && r["redirects"] == 1 && r["rule"] == "web")
    });
}

#[test]
fn unselected_cgroup_is_untouched() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let _agent = world.start_web_agent();
    let probe = Probe::run(&world.unselected, "tcp", &world.direct_addr());
    assert_eq!(probe.reply(), "direct");
    let probe = Probe::run(&world.unselected, "udp", &world.direct_addr());
    assert_eq!(probe.reply(), "direct:ping");
}

#[test]
fn descendant_is_redirected_and_nested_exempt_goes_direct() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let descendant = world.selected.child("pod");
    let exempt = world.selected.child("gateway-pod");
    let exempt_child = exempt.child("container");
    let config = format!(
        "{}exempt:\n  cgroups: [{}]\n",
        world.config(&world.web_rule()),
        exempt.path().display()
    );
    let agent = Agent::start(&config);
    agent.wait_converged(2, 2);
    assert_eq!(
        Probe::run(&descendant, "tcp", &world.direct_addr()).reply(),
        "gateway"
    );
    assert_eq!(
        Probe::run(&exempt, "tcp", &world.direct_addr()).reply(),
        "direct"
    );
    assert_eq!(
        Probe::run(&exempt_child, "tcp", &world.direct_addr()).reply(),
        "direct",
        "exempt covers descendants too"
    );
    drop((exempt_child, exempt, descendant));
}

#[test]
fn port_outside_the_rule_goes_direct() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let _agent = world.start_web_agent();
    let other = Server::start("127.0.0.2", "other-port");
    assert_eq!(
        Probe::run(&world.selected, "tcp", &other.addr.to_string()).reply(),
        "other-port"
    );
}

#[test]
fn cidr_routes_match_and_longest_prefix_wins() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let second = Server::start("127.0.0.4", "second-gateway");
    let port = world.direct.port();
    let rules = format!(
        "  - name: wide\n    gateway: 127.0.0.3\n    addresses: [127.77.0.0/16]\n    ports: [{{port: {port}, gatewayPort: {g}}}]\n  - name: narrow\n    gateway: 127.0.0.4\n    addresses: [127.77.1.1]\n    ports: [{{port: {port}, gatewayPort: {g2}}}]\n",
        g = world.gateway.port(),
        g2 = second.port()
    );
    let agent = Agent::start(&world.config(&rules));
    agent.wait_converged(2, 1);
    assert_eq!(
        Probe::run(&world.selected, "tcp", &format!("127.77.200.9:{port}")).reply(),
        "gateway"
    );
    assert_eq!(
        Probe::run(&world.selected, "tcp", &format!("127.77.1.1:{port}")).reply(),
        "second-gateway"
    );
}

#[test]
fn udp_sendto_is_redirected_and_the_reply_comes_from_the_original_destination() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let _agent = world.start_web_agent();
    let probe = Probe::run(&world.selected, "udp", &world.direct_addr());
    assert_eq!(probe.reply(), "gateway:ping");
    assert_eq!(
        probe.peer,
        world.direct_addr(),
        "recvfrom must see the address the client sent to"
    );
}

#[test]
fn connected_udp_is_redirected() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let _agent = world.start_web_agent();
    let probe = Probe::run(&world.selected, "udp-connected", &world.direct_addr());
    assert_eq!(probe.reply(), "gateway:ping");
    assert_eq!(
        probe.peer,
        world.direct_addr(),
        "getpeername on connected UDP"
    );
}

#[test]
fn v4_mapped_destinations_on_v6_sockets_use_the_v4_routes() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let _agent = world.start_web_agent();
    let mapped = format!("[::ffff:127.0.0.2]:{}", world.direct.port());
    let probe = Probe::run(&world.selected, "tcp", &mapped);
    assert_eq!(
        probe.reply(),
        "gateway",
        "a dual-stack socket must not bypass a v4 rule"
    );
    assert_eq!(probe.peer, mapped);
    let probe = Probe::run(&world.selected, "udp", &mapped);
    assert_eq!(probe.reply(), "gateway:ping");
    assert_eq!(probe.peer, mapped, "recvmsg6 restores the mapped source");
}

#[test]
fn native_v6_routes_reach_v6_and_v4_mapped_gateways() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let direct6 = Server::start("::1", "direct6");
    let gateway6 = Server::start("::1", "gateway6");
    let direct6b = Server::start("::1", "direct6b");
    let rules = format!(
        "  - name: v6\n    gateway: '::1'\n    addresses: ['::1']\n    ports: [{{port: {p}, gatewayPort: {g}}}, {{port: {p}, gatewayPort: {g}, protocol: UDP}}]\n  - name: v6-to-v4\n    gateway: 127.0.0.3\n    addresses: ['::1/128']\n    ports: [{{port: {pb}, gatewayPort: {g4}}}]\n",
        p = direct6.port(),
        g = gateway6.port(),
        pb = direct6b.port(),
        g4 = world.gateway.port()
    );
    let agent = Agent::start(&world.config(&rules));
    agent.wait_converged(3, 1);
    let target = direct6.addr.to_string();
    let probe = Probe::run(&world.selected, "tcp", &target);
    assert_eq!(probe.reply(), "gateway6");
    assert_eq!(probe.peer, target);
    let probe = Probe::run(&world.selected, "udp", &target);
    assert_eq!(probe.reply(), "gateway6:ping");
    assert_eq!(probe.peer, target);
    let probe = Probe::run(&world.selected, "tcp", &direct6b.addr.to_string());
    assert_eq!(
        probe.reply(),
        "gateway",
        "v6 destination sent to a v4 gateway via its mapped address"
    );
    assert_eq!(
        Probe::run(&world.unselected, "tcp", &target).reply(),
        "direct6"
    );
}

#[test]
fn fail_closed_route_without_gateway_refuses_with_eperm() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let port = world.direct.port();
    let rules = format!(
        "  - name: closed\n    failClosed: true\n    addresses: [127.0.0.2]\n    ports: [{{port: {port}}}, {{port: {port}, protocol: UDP}}]\n"
    );
    let agent = Agent::start(&world.config(&rules));
    agent.wait_converged(2, 1);
    for mode in ["tcp", "udp"] {
        let probe = Probe::run(&world.selected, mode, &world.direct_addr());
        assert!(!probe.ok, "{mode}: fail-closed must refuse, got {probe:?}");
        assert_eq!(probe.errno, Some(libc::EPERM), "{mode}: {probe:?}");
    }
    assert_eq!(
        Probe::run(&world.unselected, "tcp", &world.direct_addr()).reply(),
        "direct",
        "only selected tasks are refused"
    );
    let routes = agent.routes();
    assert!(
        routes
            .iter()
            .all(|r| r["gateway"].is_null() && r["failClosed"] == true),
        "{routes:#?}"
    );

    // The same rule failing open: no gateway, no routes, traffic goes direct.
    agent.write_config(&world.config(&rules.replace("failClosed: true", "failClosed: false")));
    agent.wait_converged(0, 1);
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "direct"
    );
}

/// Rule sets drawn (on the host; in the kernel matrix's emulated VMs, where a round takes ten
/// times as long, the first [`VM_ROUNDS`] of them), and addresses probed in each.
const ROUNDS: usize = 12;
const VM_ROUNDS: usize = 3;
const ADDRESSES: usize = 20;

/// A small deterministic generator (xorshift64): the same rule sets on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `explain` says what the kernel does. Over rule sets of nested prefixes and exact addresses
/// drawn at random (four gateways, rules on the probed port or on another one), every
/// address's `explain` answer for an IPv4 socket is what a real connection from the selected
/// cgroup meets: the same gateway, a refusal, or direct.
#[test]
fn explain_agrees_with_the_kernel_on_random_rule_sets() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let gateways = [
        ("gateway", &world.gateway),
        ("gw4", &Server::start("127.0.0.4", "gw4")),
        ("gw5", &Server::start("127.0.0.5", "gw5")),
        ("gw6", &Server::start("127.0.0.6", "gw6")),
    ];
    let port = world.direct.port();
    let mut rng = Rng(0x5eed_cafe_f00d_beef);
    let mut agent: Option<Agent> = None;
    let mut checked = 0;
    let rounds = if egress_tests::time_scale() > 1 {
        VM_ROUNDS
    } else {
        ROUNDS
    };
    for round in 0..rounds {
        let mut rules = String::new();
        for rule in 0..=rng.below(5) {
            let (_, gateway) = gateways[usize::try_from(rng.below(4)).expect("small")];
            let addresses: Vec<String> = (0..=rng.below(3))
                .map(|_| match rng.below(3) {
                    0 => "127.77.0.0/16".to_owned(),
                    1 => format!("127.77.{}.0/24", rng.below(4)),
                    _ => format!("127.77.{}.{}", rng.below(4), rng.below(4)),
                })
                .collect();
            let rule_port = if rng.below(5) == 0 { 1 } else { port };
            let _ = writeln!(
                rules,
                "  - name: r{round}x{rule}\n    gateway: {}\n    addresses: [{}]\n    ports: [{{port: {rule_port}, gatewayPort: {}}}]",
                gateway.addr.ip(),
                addresses.join(", "),
                gateway.port()
            );
        }
        let _ = writeln!(
            rules,
            "  - name: mark{round}\n    gateway: 127.0.0.3\n    addresses: [127.78.0.{round}]\n    ports: [{{port: {port}, gatewayPort: 1}}]"
        );
        let config = world.config(&rules);
        let agent = agent.get_or_insert_with(|| Agent::start(&config));
        agent.write_config(&config);
        let mark = format!("mark{round}");
        let suffix = format!("r{round}x");
        agent.wait_until(&format!("round {round}'s rules"), |routes, _| {
            routes.iter().any(|r| r["rule"] == mark.as_str())
                && routes.iter().all(|r| {
                    r["rule"]
                        .as_str()
                        .is_some_and(|rule| rule == mark || rule.starts_with(&suffix))
                })
        });
        // Every phase of the change is in the maps once two reads agree.
        let mut last = agent.routes();
        loop {
            std::thread::sleep(egress_tests::scaled(Duration::from_millis(200)));
            let now = agent.routes();
            if now == last {
                break;
            }
            last = now;
        }
        for _ in 0..ADDRESSES {
            let address = format!("127.77.{}.{}", rng.below(5), rng.below(4));
            let explained = explain_ipv4(agent, &world, &address, port);
            let probe = Probe::run(&world.selected, "tcp", &format!("{address}:{port}"));
            let kernel = if probe.ok {
                let (_, server) = gateways
                    .iter()
                    .find(|(label, _)| *label == probe.reply)
                    .unwrap_or_else(|| panic!("reply from {:?}", probe.reply));
                format!("redirect {}", server.addr)
            } else if probe.errno == Some(libc::EPERM) {
                "refuse".to_owned()
            } else {
                assert_eq!(probe.errno, Some(libc::ECONNREFUSED), "{probe:?}");
                "direct".to_owned()
            };
            assert_eq!(
                explained, kernel,
                "{address}:{port} with the rules\n{rules}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, rounds * ADDRESSES);
}

/// `explain`'s outcome for a TCP connection from an IPv4 socket in the selected cgroup:
/// `redirect GATEWAY:PORT`, `refuse` or `direct`.
fn explain_ipv4(agent: &Agent, world: &World, address: &str, port: u16) -> String {
    let cgroup = world.selected.path().display().to_string();
    let target = format!("{address}:{port}");
    let output = agent.cli(&["explain", "--cgroup", &cgroup, &target, "-o", "json"]);
    assert!(output.status.success(), "explain: {output:?}");
    let explanation: Value = serde_json::from_slice(&output.stdout).expect("explain json");
    let decision = explanation["host"]["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| {
            d["protocol"] == "TCP"
                && d["port"] == port
                && d["sockets"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|k| k == "ipv4"))
        })
        .unwrap_or_else(|| panic!("no decision for {target}: {explanation:#}"));
    let outcome = &decision["outcome"];
    match outcome["action"].as_str() {
        Some("redirect") => format!(
            "redirect {}",
            std::net::SocketAddr::new(
                outcome["gateway"]
                    .as_str()
                    .and_then(|g| g.parse().ok())
                    .expect("a gateway address"),
                u16::try_from(outcome["gatewayPort"].as_u64().expect("a port")).expect("a port"),
            )
        ),
        Some("refuse") => "refuse".to_owned(),
        _ => "direct".to_owned(),
    }
}
