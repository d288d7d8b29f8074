//! Learning in the kernel: real stub resolvers inside a selected cgroup resolve names against a
//! real server whose answers rotate, and connect at once. Every address they connect to must
//! already be routed, because the program read the answer before the resolver did.

use std::time::{Duration, Instant};

use egress_tests::{
    Agent, Probe, Server, TestCgroup, World, config_duration, kernel_tests_enabled,
    resolvers::{Greeters, Resolver, RotatingDns, Rounds, forge},
    scaled,
};
use serde_json::{Value, json};

/// The pool behind `pool.test`: 40 addresses, 4 per answer, TTL 1, as S3 and ELBs rotate.
const POOL: &str = "127.1.0.1-127.1.0.40";

/// Queries c-ares sends at once on one socket, each name with an address of its own
/// (`n<i>.burst.test` → `127.3.0.<i+1>`).
const BURST: u32 = 64;

fn zone() -> Value {
    let pool: Vec<String> = (1..=40).map(|i| format!("127.1.0.{i}")).collect();
    let mut zone = json!({
        "ttl": 1,
        "names": {
            "pool.test": {"pool": pool, "per_answer": 4},
            "alias.test": {"cname": "alias2.test"},
            "alias2.test": {"cname": "pool.test"},
            "big.test": {"pool": pool, "per_answer": 4, "truncate_udp": true},
            "v6.test": {"aaaa": ["::1"]},
            "*.wild.test": {"a": ["127.2.0.1"]},
            "wild.test": {"a": ["127.2.0.2"]},
            "other.test": {"a": ["127.2.0.3"]},
        }
    });
    for i in 0..BURST {
        zone["names"][format!("n{i}.burst.test")] = json!({"a": [format!("127.3.0.{}", i + 1)]});
    }
    zone
}

/// A sandbox: the world's cgroups and gateway, a second selected cgroup, the rotating server
/// and greeters on every address the zone names.
struct Sandbox {
    /// Selected by the same rule as `world.selected`, with its own scope (dropped before the
    /// world's root).
    neighbour: TestCgroup,
    world: World,
    dns: RotatingDns,
    greeters: Greeters,
    /// The gateway on `::1`, on the IPv4 gateway's port.
    _gateway6: Server,
}

impl Sandbox {
    fn new() -> Self {
        let world = World::new();
        let neighbour = world.root.child("neighbour");
        let gateway6 = Server::bind("::1", world.gateway.port(), "gateway")
            .unwrap_or_else(|err| panic!("gateway on [::1]:{}: {err}", world.gateway.port()));
        Self {
            neighbour,
            dns: RotatingDns::start(&zone()),
            greeters: Greeters::start(&[
                POOL,
                "127.2.0.1-127.2.0.3",
                &format!("127.3.0.1-127.3.0.{BURST}"),
                "127.9.9.9",
                "::1",
            ]),
            _gateway6: gateway6,
            world,
        }
    }

    /// One rule for `hosts` on the greeters' port via the gateway (both families), learning
    /// from the rotating server, with `grace`.
    fn config(&self, hosts: &str, grace: &str) -> String {
        format!(
            "attach: {root}\n\
             dns:\n  servers: ['{dns}']\n  grace: {grace}\n\
             rules:\n  - name: learned\n    gateway: [127.0.0.3, '::1']\n    hosts: [{hosts}]\n    \
             ports: [{{port: {port}, gatewayPort: {gateway}}}]\n\
             workloads:\n  cgroups: [{selected}, {neighbour}]\n",
            root = self.world.root.path().display(),
            dns = self.dns.addr(),
            port = self.greeters.port,
            gateway = self.world.gateway.port(),
            selected = self.world.selected.path().display(),
            neighbour = self.neighbour.path().display(),
        )
    }

    fn start_agent(&self, hosts: &str, grace: &str) -> Agent {
        let agent = Agent::start(&self.config(hosts, grace));
        agent.wait_status("programs attached", |s| {
            s["agent"]["attached"] == true && s["agent"]["configLoaded"] == true
        });
        agent
    }

    fn run(&self, resolver: Resolver, name: &str, rounds: u32, family: &str) -> Rounds {
        resolver.run(
            &self.world.selected,
            &self.dns,
            name,
            self.greeters.port,
            rounds,
            family,
        )
    }

    /// `ADDR:PORT` on the greeters' port.
    fn greeter(&self, addr: &str) -> String {
        if addr.contains(':') {
            format!("[{addr}]:{}", self.greeters.port)
        } else {
            format!("{addr}:{}", self.greeters.port)
        }
    }
}

/// The learned route rows for `address` (as `maps routes` prints it, `/32` or `/128`).
fn learned_rows(agent: &Agent, address: &str) -> Vec<Value> {
    let prefix = if address.contains(':') { 128 } else { 32 };
    let destination = format!("{address}/{prefix}");
    agent
        .routes()
        .into_iter()
        .filter(|r| r["destination"] == destination.as_str() && r["source"] == "learned")
        .collect()
}

/// Asserts every round went through the gateway and every address connected to was learned
/// by `cgroup`.
fn assert_no_leak(agent: &Agent, what: &str, rounds: &Rounds, cgroup: &TestCgroup) {
    assert_eq!(
        rounds.direct(),
        0,
        "{what}: connections went direct: {rounds:?}"
    );
    assert_eq!(
        rounds.via_gateway(),
        rounds.rounds,
        "{what}: every round reaches the gateway: {rounds:?}"
    );
    let cgroup = cgroup.path().to_string_lossy();
    for address in &rounds.addresses {
        let rows = learned_rows(agent, address);
        assert!(
            rows.iter()
                .any(|r| r["cgroup"].as_str().is_some_and(|c| cgroup.ends_with(c))),
            "{what}: {address} learned by {cgroup}: {rows:?}"
        );
    }
}

fn counter(agent: &Agent, name: &str) -> u64 {
    agent
        .maps_json("stats")
        .and_then(|s| s["counters"][name].as_u64())
        .unwrap_or(0)
}

#[test]
fn rotating_answers_never_leak_with_glibc() {
    if !kernel_tests_enabled() {
        return;
    }
    let sandbox = Sandbox::new();
    let agent = sandbox.start_agent("pool.test", "5m");
    let rounds = sandbox.run(Resolver::Glibc, "pool.test", 200, "any");
    assert_no_leak(
        &agent,
        "glibc, 200 rounds",
        &rounds,
        &sandbox.world.selected,
    );
    // Each answer's first address is the one connected to; all 40 were in answers.
    assert_eq!(rounds.addresses.len(), 10, "{rounds:?}");
    for i in 1..=40 {
        let address = format!("127.1.0.{i}");
        assert!(
            !learned_rows(&agent, &address).is_empty(),
            "{address} learned"
        );
    }
    assert!(
        counter(&agent, "learned") >= 200,
        "{:?}",
        agent.maps_json("stats")
    );
}

#[test]
fn every_stub_resolver_is_learned_before_it_connects() {
    if !kernel_tests_enabled() {
        return;
    }
    let sandbox = Sandbox::new();
    let agent = sandbox.start_agent("pool.test", "5m");
    for resolver in Resolver::ALL {
        let rounds = sandbox.run(resolver, "pool.test", 30, "any");
        assert_no_leak(
            &agent,
            &format!("{resolver:?}"),
            &rounds,
            &sandbox.world.selected,
        );
    }
}

#[test]
fn a_cname_chain_is_learned_under_the_name_asked() {
    if !kernel_tests_enabled() {
        return;
    }
    let sandbox = Sandbox::new();
    let agent = sandbox.start_agent("alias.test", "5m");
    for resolver in [Resolver::Glibc, Resolver::Dig] {
        let rounds = sandbox.run(resolver, "alias.test", 20, "any");
        assert_no_leak(
            &agent,
            &format!("{resolver:?} via CNAMEs"),
            &rounds,
            &sandbox.world.selected,
        );
    }
    let row = &learned_rows(&agent, "127.1.0.1")[0];
    assert_eq!(row["host"], "alias.test", "{row}");
    // A name that is not configured goes direct.
    let rounds = sandbox.run(Resolver::Dig, "other.test", 2, "any");
    assert_eq!(rounds.replies.get("127.2.0.3"), Some(&2), "{rounds:?}");
}

#[test]
fn a_truncated_answer_retried_over_tcp_is_learned() {
    if !kernel_tests_enabled() {
        return;
    }
    let sandbox = Sandbox::new();
    let agent = sandbox.start_agent("big.test", "5m");
    for resolver in [Resolver::Glibc, Resolver::Go, Resolver::Dig] {
        let rounds = sandbox.run(resolver, "big.test", 10, "any");
        assert_no_leak(
            &agent,
            &format!("{resolver:?} over TCP"),
            &rounds,
            &sandbox.world.selected,
        );
    }
    assert!(
        sandbox.dns.log().contains("tcp") && sandbox.dns.log().contains("big.test A -> TC"),
        "answers were truncated over UDP and retried over TCP:\n{}",
        sandbox.dns.log()
    );
}

#[test]
fn aaaa_answers_are_learned_and_redirect_to_the_v6_gateway() {
    if !kernel_tests_enabled() {
        return;
    }
    let sandbox = Sandbox::new();
    let agent = sandbox.start_agent("v6.test", "5m");
    for resolver in [Resolver::Glibc, Resolver::Node] {
        let rounds = sandbox.run(resolver, "v6.test", 5, "6");
        assert_no_leak(
            &agent,
            &format!("{resolver:?} AAAA"),
            &rounds,
            &sandbox.world.selected,
        );
    }
}

#[test]
fn a_wildcard_is_learned_never_resolved_and_never_matches_its_apex() {
    if !kernel_tests_enabled() {
        return;
    }
    let sandbox = Sandbox::new();
    let agent = sandbox.start_agent("'*.wild.test'", "5m");
    assert!(
        agent.routes().is_empty() && sandbox.dns.log().is_empty(),
        "nothing is resolved in advance for a wildcard: {:?}\n{}",
        agent.routes(),
        sandbox.dns.log()
    );
    for resolver in [Resolver::Glibc, Resolver::Musl, Resolver::Cares] {
        let rounds = sandbox.run(resolver, "a.b.wild.test", 3, "any");
        assert_no_leak(
            &agent,
            &format!("{resolver:?} a.b.wild.test"),
            &rounds,
            &sandbox.world.selected,
        );
    }
    let apex = sandbox.run(Resolver::Dig, "wild.test", 3, "any");
    assert_eq!(
        apex.replies.get("127.2.0.2"),
        Some(&3),
        "the apex goes direct: {apex:?}"
    );
}

/// c-ares (as in Envoy, gRPC and Node's `dns.resolve`) sends its queries in parallel on one
/// socket: every one of 64 answers is learned, so no connection goes direct.
#[test]
fn sixty_four_queries_in_flight_on_one_socket_are_all_learned() {
    if !kernel_tests_enabled() {
        return;
    }
    let sandbox = Sandbox::new();
    let agent = sandbox.start_agent("'*.burst.test'", "5m");
    let rounds = Resolver::cares_parallel(
        &sandbox.world.selected,
        &sandbox.dns,
        "n{}.burst.test",
        BURST,
        sandbox.greeters.port,
    );
    assert_eq!(
        rounds.addresses.len(),
        usize::try_from(BURST).expect("small"),
        "an address per name: {rounds:?}"
    );
    assert_no_leak(
        &agent,
        "64 parallel c-ares queries",
        &rounds,
        &sandbox.world.selected,
    );
}

#[test]
fn a_forged_answer_from_an_untrusted_source_is_ignored() {
    if !kernel_tests_enabled() {
        return;
    }
    let sandbox = Sandbox::new();
    let agent = sandbox.start_agent("pool.test", "5m");
    let before = counter(&agent, "untrusted");
    let forged = forge(
        &sandbox.world.selected,
        &sandbox.dns,
        "pool.test",
        "127.9.9.9",
        false,
    );
    assert!(
        forged
            .received
            .iter()
            .any(|r| r["answers"] == json!(["127.9.9.9"])),
        "the socket received the forged answer: {forged:?}"
    );
    assert!(
        learned_rows(&agent, "127.9.9.9").is_empty(),
        "{:?}",
        agent.routes()
    );
    assert!(counter(&agent, "untrusted") > before);
    let probe = Probe::run(
        &sandbox.world.selected,
        "tcp",
        &sandbox.greeter("127.9.9.9"),
    );
    assert_eq!(
        probe.reply().trim(),
        "127.9.9.9",
        "not routed: the forged answer changed nothing"
    );
}

#[test]
fn a_self_forged_answer_steers_only_the_forgers_connections() {
    if !kernel_tests_enabled() {
        return;
    }
    let sandbox = Sandbox::new();
    let agent = sandbox.start_agent("pool.test", "5m");
    // Root in the selected cgroup holds CAP_NET_RAW: it poses as the trusted server.
    let forged = forge(
        &sandbox.world.selected,
        &sandbox.dns,
        "pool.test",
        "127.9.9.9",
        true,
    );
    assert!(
        forged
            .received
            .iter()
            .any(|r| r["from"] == format!("{}:53", sandbox.dns.ip)
                && r["answers"] == json!(["127.9.9.9"])),
        "the forged answer arrived as the server's: {forged:?}"
    );
    let rows = learned_rows(&agent, "127.9.9.9");
    let selected = sandbox.world.selected.path().to_string_lossy().into_owned();
    assert!(
        !rows.is_empty()
            && rows
                .iter()
                .all(|r| r["cgroup"].as_str().is_some_and(|c| selected.ends_with(c))),
        "learned in the forger's scope only: {rows:?}"
    );
    let target = sandbox.greeter("127.9.9.9");
    assert_eq!(
        Probe::run(&sandbox.world.selected, "tcp", &target).reply(),
        "gateway"
    );
    assert_eq!(
        Probe::run(&sandbox.neighbour, "tcp", &target)
            .reply()
            .trim(),
        "127.9.9.9",
        "another selected cgroup is not steered by the forgery"
    );
    assert_eq!(
        Probe::run(&sandbox.world.unselected, "tcp", &target)
            .reply()
            .trim(),
        "127.9.9.9"
    );
}

#[test]
fn learned_addresses_expire_after_ttl_plus_grace_and_status_shows_them() {
    if !kernel_tests_enabled() {
        return;
    }
    let sandbox = Sandbox::new();
    // Scaled: the checks below, made before the address expires, must fit in its lifetime.
    let grace = scaled(Duration::from_secs(2));
    let agent = sandbox.start_agent("'*.wild.test'", &config_duration(grace));
    let rounds = sandbox.run(Resolver::Glibc, "x.wild.test", 1, "any");
    assert_no_leak(&agent, "before expiry", &rounds, &sandbox.world.selected);
    let row = learned_rows(&agent, "127.2.0.1").remove(0);
    assert_eq!(row["host"], "*.wild.test", "{row}");
    let expires = row["expiresInSecs"].as_f64().expect("learned rows expire");
    assert!(
        expires > 0.0 && expires <= 1.0 + grace.as_secs_f64(),
        "TTL 1 s + grace {grace:?}: {row}"
    );
    agent.wait_status("status lists what was learned", |s| {
        s["learned"].as_array().is_some_and(|l| {
            l.iter().any(|g| {
                g["host"] == "*.wild.test"
                    && g["addresses"] == 1
                    && g["cgroup"]
                        .as_str()
                        .is_some_and(|c| c.ends_with("selected"))
            })
        })
    });
    let deadline = Instant::now() + scaled(Duration::from_secs(15));
    while !learned_rows(&agent, "127.2.0.1").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the address never expired: {row}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let probe = Probe::run(
        &sandbox.world.selected,
        "tcp",
        &sandbox.greeter("127.2.0.1"),
    );
    assert_eq!(
        probe.reply().trim(),
        "127.2.0.1",
        "expired: no longer routed"
    );
}

/// How many markers (`LEARNED` entries under scope 0) the agent's pinned map holds.
fn markers(agent: &Agent) -> usize {
    let pin = agent
        .bpffs_dir
        .join(format!("maps/v{}/LEARNED", egress_common::ABI_VERSION));
    let output = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&pin)
        .output()
        .unwrap_or_else(|err| panic!("bpftool map dump {}: {err}", pin.display()));
    let entries: Vec<Value> = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("bpftool map dump {}: {err}", pin.display()));
    entries
        .iter()
        .filter(|entry| {
            entry["key"].as_array().is_some_and(|key| {
                key.iter()
                    .take(8)
                    .all(|byte| byte.as_str().is_some_and(|b| b == "0x00"))
            })
        })
        .count()
}

#[test]
fn an_address_one_scope_drops_stays_routed_for_a_scope_that_holds_it() {
    if !kernel_tests_enabled() {
        return;
    }
    let sandbox = Sandbox::new();
    // Scaled: the neighbour's entry (TTL 1 s + grace) must outlive the sweep waited for below.
    let grace = scaled(Duration::from_secs(2));
    let agent = sandbox.start_agent("'*.wild.test'", &config_duration(grace));
    let rounds = sandbox.run(Resolver::Glibc, "x.wild.test", 1, "any");
    assert_no_leak(&agent, "selected", &rounds, &sandbox.world.selected);
    assert_eq!(markers(&agent), 1, "one address learned: one marker");
    // The neighbour keeps learning the address while the selected cgroup's entry expires.
    let selected = sandbox.world.selected.path().to_string_lossy().into_owned();
    let deadline = Instant::now() + scaled(Duration::from_secs(20));
    loop {
        let rounds = Resolver::Glibc.run(
            &sandbox.neighbour,
            &sandbox.dns,
            "x.wild.test",
            sandbox.greeters.port,
            1,
            "any",
        );
        assert_no_leak(&agent, "neighbour", &rounds, &sandbox.neighbour);
        let rows = learned_rows(&agent, "127.2.0.1");
        if !rows
            .iter()
            .any(|r| r["cgroup"].as_str().is_some_and(|c| selected.ends_with(c)))
        {
            break;
        }
        assert!(Instant::now() < deadline, "never expired: {rows:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // A sweep after the selected cgroup's entry went (resync is 1 s; the neighbour's entry
    // lasts TTL 1 s + grace, and the grace is scaled like this wait): the marker stays, and a
    // connect with no new answer is still redirected.
    std::thread::sleep(scaled(Duration::from_millis(1200)));
    assert_eq!(markers(&agent), 1, "the neighbour still holds the address");
    assert_eq!(
        Probe::run(&sandbox.neighbour, "tcp", &sandbox.greeter("127.2.0.1")).reply(),
        "gateway",
        "the neighbour's entry is still marked"
    );
    let deadline = Instant::now() + scaled(Duration::from_secs(15));
    while markers(&agent) > 0 {
        assert!(
            Instant::now() < deadline,
            "the marker outlived every entry: {:?}",
            learned_rows(&agent, "127.2.0.1")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(learned_rows(&agent, "127.2.0.1").is_empty());
    assert_eq!(
        Probe::run(&sandbox.neighbour, "tcp", &sandbox.greeter("127.2.0.1"))
            .reply()
            .trim(),
        "127.2.0.1",
        "nothing holds it: direct"
    );
}

/// Learns, stops the agent with `signal`, takes DNS down, starts the agent again and connects
/// for 8 s (scaled, to span the restart however slow it is) to every address the workload had
/// learned: none may go direct.
fn restart_during_an_outage(signal: i32) {
    let mut sandbox = Sandbox::new();
    let mut agent = sandbox.start_agent("pool.test", "5m");
    let rounds = sandbox.run(Resolver::Glibc, "pool.test", 20, "4");
    assert_no_leak(
        &agent,
        "before the restart",
        &rounds,
        &sandbox.world.selected,
    );
    agent.stop_with(signal);
    sandbox.dns.stop();
    agent.spawn();
    let mut direct = Vec::new();
    let mut connections = 0;
    let until = Instant::now() + scaled(Duration::from_secs(8));
    while Instant::now() < until {
        for address in &rounds.addresses {
            let probe = Probe::run(&sandbox.world.selected, "tcp", &sandbox.greeter(address));
            connections += 1;
            if probe.reply() != "gateway" {
                direct.push(address.clone());
            }
        }
    }
    assert!(
        direct.is_empty(),
        "{} of {connections} went direct: {direct:?}",
        direct.len()
    );
    agent.wait_status("the restarted agent is in force", |s| {
        s["agent"]["attached"] == true
    });
    for address in &rounds.addresses {
        assert!(
            !learned_rows(&agent, address).is_empty(),
            "{address} kept: {:?}",
            agent.routes()
        );
    }
    sandbox.dns.restart();
}

#[test]
fn a_sigterm_restart_during_a_dns_outage_keeps_every_route() {
    if !kernel_tests_enabled() {
        return;
    }
    restart_during_an_outage(libc::SIGTERM);
}

#[test]
fn a_sigkill_restart_during_a_dns_outage_keeps_every_route() {
    if !kernel_tests_enabled() {
        return;
    }
    restart_during_an_outage(libc::SIGKILL);
}
