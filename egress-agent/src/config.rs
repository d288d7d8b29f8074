//! The standalone configuration file (YAML): its format, parsing and validation. The file
//! source (`file.rs`) turns a parsed file into an [`crate::intent::Intent`].
//!
//! Parsing and validation happen in one pass through serde, so every error carries the field
//! path and the line and column where it was found, e.g.
//! `rules[0].ports[1].protocol: unknown variant `SCTP`, expected `TCP` or `UDP` at line 9 column 19`.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, de};

use crate::{
    intent::{DnsIntent, PortMap},
    route::{Gateways, Protocol},
};

/// Errors reading or validating a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not a valid configuration; the message names the field and the line.
    #[error("invalid configuration {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// serde's message: field path, problem, line and column.
        message: String,
    },
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to attach the programs; default: the cgroup2 mount root.
    #[serde(default)]
    pub attach: Option<PathBuf>,
    /// Resolver settings.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Redirect rules, in priority order: on a conflict the first rule wins.
    #[serde(default)]
    pub rules: Rules,
    /// Cgroups whose tasks (and descendants) are redirected.
    #[serde(default)]
    pub workloads: CgroupSet,
    /// Cgroups whose tasks go direct even inside a selected cgroup.
    #[serde(default)]
    pub exempt: CgroupSet,
}

/// `dns:`: resolver settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DnsConfig {
    /// DNS servers (`ip` or `ip:port`), tried in order; empty: /etc/resolv.conf.
    #[serde(default, deserialize_with = "servers")]
    pub servers: Vec<SocketAddr>,
    /// Further resolvers (`ip` or `ip:port`) whose answers to workloads are learned; the
    /// servers above (or resolv.conf's) are always trusted.
    #[serde(default, deserialize_with = "servers")]
    pub trusted: Vec<SocketAddr>,
    /// Learn addresses from the DNS answers selected workloads receive (default true).
    #[serde(default = "yes")]
    pub learn: bool,
    /// How long an address stays routed after the TTL of its last answer ran out (`5m`).
    #[serde(default = "default_grace", deserialize_with = "duration")]
    pub grace: Duration,
    /// TTLs below this are raised to it (default 0: honour the record, however short).
    #[serde(default, deserialize_with = "duration")]
    pub min_ttl: Duration,
    /// TTLs above this are lowered to it (default `24h`).
    #[serde(default = "default_max_ttl", deserialize_with = "duration")]
    pub max_ttl: Duration,
    /// Timeout of one query (default `2s`).
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        let defaults = DnsIntent::default();
        Self {
            servers: defaults.servers,
            trusted: defaults.trusted,
            learn: defaults.learn,
            grace: defaults.grace,
            min_ttl: defaults.min_ttl,
            max_ttl: defaults.max_ttl,
            timeout: defaults.timeout,
        }
    }
}

impl From<&DnsConfig> for DnsIntent {
    fn from(dns: &DnsConfig) -> Self {
        Self {
            servers: dns.servers.clone(),
            trusted: dns.trusted.clone(),
            learn: dns.learn,
            grace: dns.grace,
            min_ttl: dns.min_ttl,
            max_ttl: dns.max_ttl,
            timeout: dns.timeout,
        }
    }
}

const fn yes() -> bool {
    true
}

fn default_grace() -> Duration {
    DnsIntent::default().grace
}

fn default_max_ttl() -> Duration {
    DnsIntent::default().max_ttl
}

fn default_timeout() -> Duration {
    DnsIntent::default().timeout
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(de::Error::custom)
}

fn servers<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| {
            text.parse::<SocketAddr>()
                .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    de::Error::custom(format_args!(
                        "{text:?} is not a server address (ip or ip:port)"
                    ))
                })
        })
        .collect()
}

/// Parses `500ms`, `10s`, `5m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s or 5m"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "s" | "" => Duration::from_secs(number),
        "m" => Duration::from_secs(number * 60),
        "h" => Duration::from_secs(number * 3600),
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m or h)"
            ));
        }
    };
    Ok(duration)
}

/// `rules:`, with names checked for uniqueness.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules(pub Vec<Rule>);

impl<'de> Deserialize<'de> for Rules {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let rules = Vec::<Rule>::deserialize(deserializer)?;
        let mut names = BTreeSet::new();
        for rule in &rules {
            if !names.insert(rule.name.as_str()) {
                return Err(de::Error::custom(format_args!(
                    "duplicate rule name {:?}: names must be unique",
                    rule.name
                )));
            }
        }
        udp_gateway_ports_are_unique(&rules).map_err(de::Error::custom)?;
        Ok(Self(rules))
    }
}

/// A redirected UDP socket's replies are attributed to its original destination by the gateway
/// address and port they come from, so each UDP gateway port may stand for one destination.
fn udp_gateway_ports_are_unique(rules: &[Rule]) -> Result<(), String> {
    let mut seen: std::collections::BTreeMap<(IpAddr, u16), (&str, IpNet)> =
        std::collections::BTreeMap::new();
    for rule in rules {
        for port in rule.ports.iter().filter(|p| p.protocol == Protocol::Udp) {
            let Some(dest) = rule.addresses.first() else {
                continue;
            };
            for gateway in rule.gateways.addresses() {
                if let Some((other, other_dest)) =
                    seen.insert((gateway, port.gateway_port), (&rule.name, *dest))
                    && other_dest != *dest
                {
                    return Err(format!(
                        "rules {other:?} and {:?} send different UDP destinations ({other_dest}, {dest}) to gateway {gateway} port {}: replies could not be told apart; give each its own gateway port",
                        rule.name, port.gateway_port
                    ));
                }
            }
        }
    }
    Ok(())
}

/// One redirect rule.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", try_from = "RawRule")]
pub struct Rule {
    /// Unique name, shown by the CLI.
    pub name: String,
    /// The egress gateway (a `ClusterIP`, or one of each family for a dual-stack Service).
    /// Empty: unknown, so no redirect (or a refusal when `fail_closed`).
    pub gateways: Gateways,
    /// Hostnames whose addresses are redirected: exact names and `*.` wildcards, lower case.
    pub hosts: Vec<String>,
    /// Static addresses and CIDRs.
    pub addresses: Vec<IpNet>,
    /// Refuse connections rather than go direct while the gateway is unknown.
    pub fail_closed: bool,
    /// Refuse QUIC (UDP 443) where TCP 443 is redirected (default true).
    pub refuse_quic: bool,
    /// Ports to redirect.
    pub ports: Vec<PortMap>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    name: String,
    #[serde(default)]
    gateway: GatewayList,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    addresses: Vec<Address>,
    #[serde(default)]
    fail_closed: bool,
    #[serde(default = "yes")]
    refuse_quic: bool,
    ports: Vec<PortMap>,
}

/// Longest rule name: the pinned label holds 255 bytes and a NUL; a DNS-name-like bound.
pub const MAX_RULE_NAME: usize = 253;

/// `gateway:` as one address or a list of them (one per family at most).
#[derive(Default)]
struct GatewayList(Vec<IpAddr>);

impl<'de> Deserialize<'de> for GatewayList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Clone, Copy)]
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = GatewayList;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an IP address, or a list of one IPv4 and one IPv6 address")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<GatewayList, E> {
                let addr = text
                    .parse::<IpAddr>()
                    .map_err(|_| E::custom(format_args!("{text:?} is not an IP address")))?;
                Ok(GatewayList(vec![addr]))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<GatewayList, A::Error> {
                let mut addresses = Vec::new();
                while let Some(text) = seq.next_element::<String>()? {
                    addresses.push(self.visit_str::<A::Error>(&text)?.0[0]);
                }
                Ok(GatewayList(addresses))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl TryFrom<RawRule> for Rule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Self, Self::Error> {
        let name = &raw.name;
        if name.is_empty() || name.len() > MAX_RULE_NAME {
            return Err(format!(
                "name: {name:?} must be 1 to {MAX_RULE_NAME} bytes long"
            ));
        }
        if raw.ports.is_empty() {
            return Err(format!(
                "rule {name:?}: ports: at least one port is required"
            ));
        }
        if raw.hosts.is_empty() && raw.addresses.is_empty() {
            return Err(format!(
                "rule {name:?}: give hosts, addresses or both: the rule matches nothing"
            ));
        }
        for host in &raw.hosts {
            validate_hostname(host).map_err(|why| format!("rule {name:?}: hosts: {why}"))?;
        }
        let gateways = Gateways::from_addresses(raw.gateway.0.iter().copied());
        if raw.gateway.0.iter().any(IpAddr::is_unspecified) {
            return Err(format!(
                "rule {name:?}: gateway: an unspecified address is not a gateway; omit the field while it is unknown"
            ));
        }
        if gateways.addresses().len() != raw.gateway.0.len() {
            return Err(format!(
                "rule {name:?}: gateway: give at most one address per family (one IPv4, one IPv6)"
            ));
        }
        let addresses: Vec<IpNet> = raw.addresses.into_iter().map(|a| a.0).collect();
        if raw.ports.iter().any(|p| p.protocol == Protocol::Udp)
            && !(raw.hosts.is_empty()
                && addresses.len() == 1
                && addresses[0].prefix_len() == addresses[0].max_prefix_len())
        {
            return Err(format!(
                "rule {name:?}: ports: a UDP port needs the rule to name exactly one address and no hosts: replies from a gateway port are attributed to one destination"
            ));
        }
        Ok(Self {
            name: raw.name,
            gateways,
            hosts: raw.hosts.iter().map(|h| normalize_host(h)).collect(),
            addresses,
            fail_closed: raw.fail_closed,
            refuse_quic: raw.refuse_quic,
            ports: raw.ports,
        })
    }
}

/// A hostname as rules hold it: lower case, without a trailing dot.
pub fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Checks a hostname or a `*.` wildcard (which matches one or more labels, never the apex).
pub fn validate_hostname(host: &str) -> Result<(), String> {
    let name = host.strip_suffix('.').unwrap_or(host);
    let name = match name.strip_prefix("*.") {
        Some(rest) if !rest.contains('*') && rest.contains('.') => rest,
        Some(_) => {
            return Err(format!(
                "{host:?}: a wildcard covers subdomains of a name with at least two labels, like *.example.com"
            ));
        }
        None => name,
    };
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(format!("{host:?} is not a valid hostname"));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(format!("{host:?} is an address: list it under addresses"));
    }
    Ok(())
}

/// An address or CIDR from `addresses:`. Host bits must be zero, so `10.0.0.1/8` is refused
/// rather than silently widened.
struct Address(IpNet);

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let net = match IpNet::from_str(&text) {
            Ok(net) => net,
            Err(_) => IpAddr::from_str(&text).map(IpNet::from).map_err(|_| {
                de::Error::custom(format_args!("{text:?} is not an IP address or CIDR"))
            })?,
        };
        if net.trunc() != net {
            return Err(de::Error::custom(format_args!(
                "{text:?} has host bits set; did you mean {}?",
                net.trunc()
            )));
        }
        Ok(Self(net))
    }
}

/// A port mapping as the file writes it: `{port, gatewayPort, protocol}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPortMap {
    port: u16,
    #[serde(default)]
    gateway_port: Option<u16>,
    #[serde(default)]
    protocol: Protocol,
}

impl<'de> Deserialize<'de> for PortMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawPortMap::deserialize(deserializer)?;
        let gateway_port = raw.gateway_port.unwrap_or(raw.port);
        if raw.port == 0 || gateway_port == 0 {
            return Err(de::Error::custom("port: 0 is not a port (1-65535)"));
        }
        Ok(Self {
            port: raw.port,
            gateway_port,
            protocol: raw.protocol,
        })
    }
}

/// `workloads:` / `exempt:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupSet {
    /// Cgroup paths: absolute, or relative to the cgroup2 mount.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
}

impl Config {
    /// Parses and validates `text`; `path` is only used in messages.
    ///
    /// Messages read `<field path>: <problem> at line L column C`.
    pub fn parse(path: &std::path::Path, text: &str) -> Result<Self, ConfigError> {
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)).map_err(|err| {
            let field = err.path().to_string();
            let inner = err.into_inner();
            ConfigError::Invalid {
                path: path.to_owned(),
                message: field_message(&field, &inner.to_string()),
            }
        })
    }
}

/// Puts the exact field path (from `serde_path_to_error`) in front of `serde_yaml`'s message,
/// replacing `serde_yaml`'s own path, which is coarser for errors raised by validation.
fn field_message(field: &str, yaml_message: &str) -> String {
    let problem = match yaml_message.split_once(": ") {
        Some((prefix, rest)) if !prefix.is_empty() && !prefix.contains(char::is_whitespace) => rest,
        _ => yaml_message,
    };
    if field.is_empty() || field == "." {
        problem.to_owned()
    } else {
        format!("{field}: {problem}")
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
