//! Hostname rules against a real DNS server (dnsmasq on loopback) and the real maps.

use std::time::{Duration, Instant};

use egress_tests::{
    Agent, DnsServer, Probe, Server, World, config_duration, kernel_tests_enabled, scaled,
};

/// A rule sending the world's direct port for `hosts` to `gateway` (an address with a server on
/// the world's gateway port).
fn host_rule(world: &World, name: &str, gateway: &str, hosts: &str) -> String {
    format!(
        "  - name: {name}\n    gateway: {gateway}\n    hosts: [{hosts}]\n    ports: [{{port: {p}, gatewayPort: {g}}}]\n",
        p = world.direct.port(),
        g = world.gateway.port()
    )
}

fn config(world: &World, dns: &DnsServer, rules: &str, grace: &str) -> String {
    format!(
        "{}dns:\n  servers: ['{}']\n  grace: {grace}\n",
        world.config(rules),
        dns.addr()
    )
}

fn route_destinations(agent: &Agent) -> Vec<String> {
    agent
        .routes()
        .iter()
        .map(|r| r["destination"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Starts an agent with the rule "web" for `hosts` (via 127.0.0.3) and waits until web.test's
/// address 127.0.0.2 is routed.
fn start_web(world: &World, dns: &DnsServer, hosts: &str, grace: &str) -> Agent {
    let agent = Agent::start(&config(
        world,
        dns,
        &host_rule(world, "web", "127.0.0.3", hosts),
        grace,
    ));
    agent.wait_until("127.0.0.2 routed", |routes, _| {
        has_route(routes, "127.0.0.2/32")
    });
    agent
}

fn has_route(routes: &[serde_json::Value], destination: &str) -> bool {
    routes.iter().any(|r| r["destination"] == destination)
}

#[test]
fn an_answer_lands_in_the_routes_and_redirects() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let dns = DnsServer::start(1, &[("web.test", "127.0.0.2")], &[]);
    let agent = start_web(&world, &dns, "web.test", "5m");
    let route = &agent.routes()[0];
    assert_eq!(
        route["host"], "web.test",
        "maps routes names the hostname: {route}"
    );
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "gateway"
    );
    let status = agent.host_status("web.test").expect("web.test in status");
    assert_eq!(status["state"], "fresh", "{status}");
}

#[test]
fn a_cname_chain_is_followed() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let dns = DnsServer::start(
        1,
        &[("web.test", "127.0.0.2")],
        &[("alias.test", "web.test"), ("outer.test", "alias.test")],
    );
    let agent = Agent::start(&config(
        &world,
        &dns,
        &host_rule(&world, "web", "127.0.0.3", "outer.test"),
        "5m",
    ));
    agent.wait_until(
        "outer.test -> alias.test -> web.test routed",
        |routes, _| has_route(routes, "127.0.0.2/32"),
    );
    assert_eq!(agent.routes()[0]["host"], "outer.test");
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "gateway"
    );
}

#[test]
fn a_changed_answer_is_picked_up_and_the_old_address_stays_through_grace() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let dns = DnsServer::start(1, &[("web.test", "127.0.0.2")], &[]);
    // Scaled: the checks below, made while the old address is in its grace, must fit in it.
    let grace = scaled(Duration::from_secs(4));
    let agent = start_web(&world, &dns, "web.test", &config_duration(grace));

    dns.set_hosts(&[("web.test", "127.0.0.6")]);
    let changed = Instant::now();
    agent.wait_until("new answer routed", |routes, _| {
        has_route(routes, "127.0.0.6/32")
    });
    let pickup = changed.elapsed();
    assert!(
        pickup < scaled(Duration::from_secs(3)),
        "TTL 1s: picked up after {pickup:?}"
    );
    assert!(
        has_route(&agent.routes(), "127.0.0.2/32"),
        "old address kept in grace: {:?}",
        route_destinations(&agent)
    );
    let status = agent.host_status("web.test").expect("status");
    let old = status["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["address"] == "127.0.0.2"))
        .cloned();
    assert_eq!(
        old.as_ref().map(|o| o["inAnswer"].clone()),
        Some(false.into()),
        "status shows the grace period: {status}"
    );
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "gateway",
        "a cached answer still goes through the gateway"
    );

    agent.wait_until("old address gone after TTL + grace", |routes, _| {
        !has_route(routes, "127.0.0.2/32")
    });
    let gone = changed.elapsed();
    assert!(
        gone >= grace,
        "left after {gone:?}: before its grace ({grace:?}) ended"
    );
    assert!(
        gone < grace + scaled(Duration::from_secs(5)),
        "left after {gone:?}: long after its grace ({grace:?}) ended"
    );
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "direct"
    );
}

#[test]
fn an_outage_keeps_the_addresses_stale_and_recovery_clears_the_mark() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let mut dns = DnsServer::start(1, &[("web.test", "127.0.0.2")], &[]);
    // Scaled: the outage must be seen (stale) before TTL + grace would age the address out.
    let grace = scaled(Duration::from_secs(2));
    let agent = Agent::start(&config(
        &world,
        &dns,
        &host_rule(&world, "web", "127.0.0.3", "web.test"),
        &config_duration(grace),
    ));
    agent.wait_until("routed", |routes, _| has_route(routes, "127.0.0.2/32"));
    dns.stop();
    agent.wait_status("web.test stale", |s| {
        s["hosts"][0]["stale"] == true && s["hosts"][0]["lastError"].is_string()
    });
    // Well past TTL + grace (both scaled alike): the address must still be there.
    std::thread::sleep(scaled(Duration::from_secs(5)));
    assert!(
        has_route(&agent.routes(), "127.0.0.2/32"),
        "outage must not drop addresses"
    );
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "gateway"
    );
    let stale_logs = agent
        .log()
        .matches("queries failing; keeping the last known addresses")
        .count();
    assert_eq!(
        stale_logs,
        1,
        "the failure is logged once per state change:\n{}",
        agent.log()
    );
    dns.spawn();
    agent.wait_status("stale mark cleared", |s| {
        s["hosts"][0]["state"] == "fresh" && s["hosts"][0]["lastError"].is_null()
    });
    assert!(agent.log().contains("stale mark cleared"));
}

#[test]
fn an_nxdomain_host_does_not_disturb_healthy_ones() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let dns = DnsServer::start(1, &[("web.test", "127.0.0.2")], &[]);
    let agent = start_web(&world, &dns, "missing.test, web.test", "5m");
    agent.wait_status("missing.test is NXDOMAIN", |s| {
        s["hosts"].as_array().is_some_and(|h| {
            h.iter()
                .any(|h| h["name"] == "missing.test" && h["state"] == "nxdomain")
        })
    });
    let web = agent.host_status("web.test").expect("web.test");
    assert_eq!(web["state"], "fresh");
    assert_eq!(web["failures"], 0, "{web}");
    assert_eq!(route_destinations(&agent), ["127.0.0.2/32"]);
}

#[test]
fn aaaa_answers_produce_v6_routes() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let direct6 = Server::start("::1", "direct6");
    let gateway6 = Server::start("::1", "gateway6");
    let dns = DnsServer::start(1, &[("web6.test", "::1")], &[]);
    let rules = format!(
        "  - name: v6\n    gateway: '::1'\n    hosts: [web6.test]\n    ports: [{{port: {p}, gatewayPort: {g}}}]\n",
        p = direct6.port(),
        g = gateway6.port()
    );
    let agent = Agent::start(&config(&world, &dns, &rules, "5m"));
    agent.wait_until("v6 route", |routes, _| has_route(routes, "::1/128"));
    assert_eq!(
        Probe::run(&world.selected, "tcp", &direct6.addr.to_string()).reply(),
        "gateway6"
    );
}

#[test]
fn a_conflict_between_rules_picks_the_first_and_is_shown() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    let dns = DnsServer::start(1, &[("web.test", "127.0.0.2")], &[]);
    let rules = format!(
        "{}{}",
        host_rule(&world, "first", "127.0.0.3", "web.test"),
        host_rule(&world, "second", "127.0.0.4", "web.test")
    );
    let agent = Agent::start(&config(&world, &dns, &rules, "5m"));
    agent.wait_until("routed", |routes, _| has_route(routes, "127.0.0.2/32"));
    assert_eq!(agent.routes()[0]["rule"], "first");
    assert_eq!(agent.routes()[0]["gateway"], "127.0.0.3");
    agent.wait_status("conflict shown", |s| {
        s["agent"]["conflicts"][0]["loser"] == "second"
    });
    let table = String::from_utf8(
        std::process::Command::new(egress_tests::agent::agent_bin())
            .args(["status", "--admin-addr", &agent.admin_addr.to_string()])
            .output()
            .expect("status")
            .stdout,
    )
    .expect("utf8");
    assert!(
        table.contains("CONFLICTS") && table.contains("second"),
        "{table}"
    );
    std::thread::sleep(scaled(Duration::from_secs(3))); // a few refreshes and resyncs
    let warnings = agent.log().matches("the first rule wins").count();
    assert_eq!(warnings, 1, "one warning per conflict:\n{}", agent.log());
    assert_eq!(
        Probe::run(&world.selected, "tcp", &world.direct_addr()).reply(),
        "gateway"
    );
}

#[test]
fn a_reload_adds_and_removes_hosts_without_touching_unchanged_ones() {
    if !kernel_tests_enabled() {
        return;
    }
    let world = World::new();
    // The whole test must run within one TTL (scaled: it runs slower where time is scaled).
    let ttl = scaled(Duration::from_mins(1));
    let dns = DnsServer::start(
        u32::try_from(ttl.as_secs()).expect("TTL in u32 seconds"),
        &[
            ("web.test", "127.0.0.2"),
            ("old.test", "127.0.0.7"),
            ("new.test", "127.0.0.8"),
        ],
        &[],
    );
    let agent = Agent::start(&config(
        &world,
        &dns,
        &host_rule(&world, "web", "127.0.0.3", "web.test, old.test"),
        "0s",
    ));
    agent.wait_until("both routed", |routes, _| {
        has_route(routes, "127.0.0.2/32") && has_route(routes, "127.0.0.7/32")
    });
    let web_queries = dns.queries_for("web.test");
    assert!(
        web_queries >= 1,
        "the query log must show web.test being resolved:\n{}",
        dns.log()
    );
    agent.write_config(&config(
        &world,
        &dns,
        &host_rule(&world, "web", "127.0.0.3", "web.test, new.test"),
        "0s",
    ));
    agent.wait_until("new.test added, old.test removed", |routes, _| {
        has_route(routes, "127.0.0.8/32")
            && !has_route(routes, "127.0.0.7/32")
            && has_route(routes, "127.0.0.2/32")
    });
    assert_eq!(
        dns.queries_for("web.test"),
        web_queries,
        "web.test (TTL {ttl:?}) must not be queried again by the reload"
    );
    assert!(
        agent.host_status("old.test").is_none(),
        "old.test forgotten"
    );
}
