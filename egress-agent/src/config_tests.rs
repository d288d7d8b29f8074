use std::path::Path;

use super::*;
use crate::route::Protocol;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(Path::new("test.yaml"), text).map_err(|err| err.to_string())
}

fn parse_err(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("expected an error, parsed {config:#?}"),
        Err(err) => err,
    }
}

const FULL: &str = r"
attach: /sys/fs/cgroup
dns:
  servers: ['127.0.0.1:5353']
  grace: 5m
rules:
  - name: httpbin
    gateway: 10.96.12.34
    hosts: [httpbin.org]
    addresses: [203.0.113.7, 198.51.100.0/24]
    failClosed: false
    ports:
      - {port: 80, gatewayPort: 80, protocol: TCP}
      - {port: 443, gatewayPort: 443}
workloads:
  cgroups: [/sys/fs/cgroup/system.slice/app.service]
exempt:
  cgroups: [/sys/fs/cgroup/system.slice/gateway.service]
";

#[test]
fn parses_the_documented_example() {
    let config = parse(FULL).unwrap_or_else(|err| panic!("documented example: {err}"));
    let rule = &config.rules.0[0];
    assert_eq!(rule.name, "httpbin");
    assert_eq!(rule.gateways.v4, Some("10.96.12.34".parse().unwrap()));
    assert!(rule.refuse_quic, "QUIC is refused by default");
    assert_eq!(rule.addresses.len(), 2, "{rule:?}");
    assert_eq!(
        rule.ports[1].protocol,
        Protocol::Tcp,
        "protocol defaults to TCP"
    );
    assert_eq!(rule.ports[1].gateway_port, 443);
    assert_eq!(config.workloads.cgroups.len(), 1);
}

#[test]
fn gateway_port_defaults_to_port() {
    let config = parse("rules: [{name: a, gateway: 10.0.0.1, addresses: [10.1.0.9], ports: [{port: 53, protocol: UDP}]}]")
        .unwrap_or_else(|err| panic!("{err}"));
    let port = config.rules.0[0].ports[0];
    assert_eq!(
        (port.port, port.gateway_port, port.protocol),
        (53, 53, Protocol::Udp)
    );
}

#[test]
fn errors_name_the_field_and_line() {
    let cases = [
        (
            "rules:\n  - name: a\n    gateway: 10.0.0.1\n    addresses: [10.0.0.9]\n    ports:\n      - {port: 80, protocol: SCTP}\n",
            &["rules[0].ports[0].protocol", "line 6"][..],
        ),
        (
            "rules:\n  - name: a\n    gateway: not-an-ip\n    addresses: [10.0.0.9]\n    ports: [{port: 80}]\n",
            &["rules[0].gateway", "line 3"],
        ),
        (
            "rules:\n  - name: a\n    gateway: 10.0.0.1\n    addresses: [10.0.0.1/8]\n    ports: [{port: 80}]\n",
            &["rules[0].addresses[0]", "host bits", "10.0.0.0/8", "line 4"],
        ),
        (
            "rules:\n  - name: a\n    gateway: 10.0.0.1\n    addresses: [10.0.0.9]\n    ports: [{port: 80}]\n  - name: a\n    addresses: [10.0.0.8]\n    ports: [{port: 80}]\n",
            &["duplicate rule name \"a\"", "rules"],
        ),
        (
            "rules:\n  - name: a\n    gateway: 10.0.0.1\n    ports: [{port: 80}]\n",
            &["rules[0]", "hosts, addresses", "line 2"],
        ),
        (
            "rules:\n  - name: a\n    gatway: 10.0.0.1\n    addresses: [10.0.0.9]\n    ports: [{port: 80}]\n",
            &["rules[0]", "unknown field `gatway`", "line 3"],
        ),
        (
            "rules:\n  - name: a\n    addresses: [10.0.0.9]\n    ports: [{port: 0}]\n",
            &["rules[0].ports[0]", "0 is not a port"],
        ),
        (
            "rules:\n  - name: a\n    hosts: ['exa mple.com']\n    ports: [{port: 80}]\n",
            &["rules[0]", "not a valid hostname"],
        ),
        (
            "workloads: {cgroup: [/x]}\n",
            &["workloads", "unknown field `cgroup`"],
        ),
    ];
    for (text, needles) in cases {
        let err = parse_err(text);
        for needle in needles {
            assert!(
                err.contains(needle),
                "error for\n{text}\nis {err:?}; expected it to contain {needle:?}"
            );
        }
    }
}

#[test]
fn an_empty_file_is_an_empty_config() {
    assert_eq!(
        parse("{}").unwrap_or_else(|err| panic!("{err}")),
        Config::default()
    );
}

#[test]
fn dns_settings_parse_with_defaults() {
    let config = parse("dns: {servers: ['127.0.0.1:5353', '::1'], grace: 30s, minTtl: 2s}")
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        config.dns.servers,
        [
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert_eq!(config.dns.grace, Duration::from_secs(30));
    assert_eq!(config.dns.min_ttl, Duration::from_secs(2));
    assert_eq!(
        config.dns.max_ttl,
        Duration::from_hours(24),
        "default maxTtl"
    );
    assert_eq!(
        Config::default().dns.grace,
        Duration::from_mins(5),
        "default grace is 5m"
    );
    let err = parse_err("dns: {grace: 5 minutes}");
    assert!(
        err.contains("dns.grace") && err.contains("unknown unit"),
        "{err}"
    );
    let err = parse_err("dns: {servers: [resolver.local]}");
    assert!(
        err.contains("dns.servers") && err.contains("not a server address"),
        "{err}"
    );
}

#[test]
fn gateways_take_one_address_per_family() {
    let config = parse(
        "rules: [{name: a, gateway: [10.0.0.1, 'fd00::1'], hosts: [A.Test, '*.cdn.test'], ports: [{port: 443}]}]",
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let rule = &config.rules.0[0];
    assert_eq!(
        (rule.gateways.v4.is_some(), rule.gateways.v6.is_some()),
        (true, true)
    );
    assert_eq!(rule.hosts, ["a.test", "*.cdn.test"], "lower case");
    let err = parse_err(
        "rules: [{name: a, gateway: [10.0.0.1, 10.0.0.2], hosts: [a.test], ports: [{port: 443}]}]",
    );
    assert!(err.contains("one address per family"), "{err}");
}

#[test]
fn udp_needs_one_destination_per_gateway_port() {
    for (text, needle) in [
        (
            "rules: [{name: a, gateway: 10.0.0.1, hosts: [a.test], ports: [{port: 53, protocol: UDP}]}]",
            "exactly one address and no hosts",
        ),
        (
            "rules: [{name: a, gateway: 10.0.0.1, addresses: [10.9.0.0/16], ports: [{port: 53, protocol: UDP}]}]",
            "exactly one address",
        ),
        (
            "rules: [{name: a, gateway: 10.0.0.1, addresses: [10.9.0.1], ports: [{port: 53, protocol: UDP}]}, {name: b, gateway: 10.0.0.1, addresses: [10.9.0.2], ports: [{port: 5353, gatewayPort: 53, protocol: UDP}]}]",
            "replies could not be told apart",
        ),
    ] {
        let err = parse_err(text);
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn wildcards_cover_subdomains_of_a_two_label_name() {
    for bad in ["*.com", "a.*.test", "**.test"] {
        let err = parse_err(&format!(
            "rules: [{{name: a, gateway: 10.0.0.1, hosts: ['{bad}'], ports: [{{port: 443}}]}}]"
        ));
        assert!(err.contains("hosts"), "{bad}: {err}");
    }
}
