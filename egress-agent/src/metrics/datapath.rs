//! What the programs did, read from the pinned maps at each scrape: per rule and hostname
//! (a target's counter slot is one rule's traffic to one destination set), per hostname for
//! tasks that were not selected, and the global counters.

use std::collections::BTreeMap;

use egress_common::{Counters, SET_COUNTER, label_kind};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::counter::ConstCounter,
};
use tracing::debug;

use crate::{
    bpffs::PinDir,
    datapath::{DatapathError, Maps},
};

/// Reads the pinned maps under a pin directory at each scrape.
#[derive(Debug)]
pub struct Datapath {
    pins: PinDir,
}

impl Datapath {
    /// The maps pinned under `pins`.
    pub const fn new(pins: PinDir) -> Self {
        Self { pins }
    }
}

/// One read of the maps.
struct Reading {
    /// Per (rule, hostname): the summed counters of the slots.
    per_rule: BTreeMap<(String, String), Counters>,
    /// Per hostname: connections from tasks that were not selected.
    unselected: BTreeMap<String, u64>,
    /// The global counters.
    stats: Vec<(&'static str, u64)>,
}

fn read(pins: &PinDir) -> Result<Reading, DatapathError> {
    let maps = Maps::open(pins)?;
    let rules = maps.labels(label_kind::RULE)?;
    let sets = maps.labels(label_kind::SET)?;
    let counters = maps.counters()?;
    let label = |labels: &BTreeMap<u32, String>, id: u32| {
        labels.get(&id).cloned().unwrap_or_else(|| format!("#{id}"))
    };
    let mut slots: BTreeMap<u32, (String, String)> = BTreeMap::new();
    for (key, target) in maps.targets()? {
        slots
            .entry(target.counter)
            .or_insert_with(|| (label(&rules, target.rule), label(&sets, key.set)));
    }
    let mut per_rule: BTreeMap<(String, String), Counters> = BTreeMap::new();
    for (slot, names) in slots {
        let Some(c) = counters.get(&slot) else {
            continue;
        };
        let sum = per_rule.entry(names).or_default();
        sum.redirected += c.redirected;
        sum.refused += c.refused;
        sum.family_mismatch += c.family_mismatch;
        sum.reversed += c.reversed;
    }
    let unselected = counters
        .iter()
        .filter(|(slot, _)| **slot & SET_COUNTER != 0)
        .map(|(slot, c)| (label(&sets, slot & !SET_COUNTER), c.unselected))
        .fold(BTreeMap::new(), |mut acc, (host, n)| {
            *acc.entry(host).or_default() += n;
            acc
        });
    Ok(Reading {
        per_rule,
        unselected,
        stats: maps.stats()?,
    })
}

/// A per-rule counter: its name, help and field.
type PerRule = (&'static str, &'static str, fn(&Counters) -> u64);

/// Per-rule counters.
const PER_RULE: [PerRule; 4] = [
    (
        "redirected",
        "Connections and datagrams sent to the gateway, per rule and hostname",
        |c| c.redirected,
    ),
    (
        "refused",
        "Connections and datagrams refused (fail-closed, QUIC, no gateway of the family), per rule and hostname",
        |c| c.refused,
    ),
    (
        "family_mismatch",
        "Refusals because the gateway has no address of the socket's family, per rule and hostname",
        |c| c.family_mismatch,
    ),
    (
        "reverse_translations",
        "Reply sources and peer names restored to the original destination, per rule and hostname",
        |c| c.reversed,
    ),
];

/// Global counters worth their own name: (stat name, metric name, help).
const GLOBAL: [(&str, &str, &str); 5] = [
    (
        "learned",
        "dns_answers_learned",
        "Addresses learned from DNS answers selected workloads received",
    ),
    (
        "unparsed",
        "dns_answers_unparsed",
        "DNS answers to selected workloads that could not be parsed (the agent's own resolution is the fallback)",
    ),
    (
        "untrusted",
        "dns_answers_untrusted",
        "DNS answers ignored: from an untrusted source, or to a query the socket did not send",
    ),
    (
        "learn_failed",
        "dns_learn_failed",
        "Learned addresses that could not be stored (map full)",
    ),
    (
        "quic_refused",
        "quic_refused",
        "QUIC (UDP 443) refused where TCP 443 is redirected",
    ),
];

impl Collector for Datapath {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match read(&self.pins) {
            Ok(reading) => reading.encode(encoder),
            Err(err) => {
                // Nothing pinned yet (or uninstalled): no datapath series.
                debug!(error = %err, "metrics: cannot read the pinned maps");
                Ok(())
            }
        }
    }
}

impl Reading {
    /// Every datapath family, with the series this reading has.
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, field) in PER_RULE {
            let counter = ConstCounter::new(0_u64);
            let mut metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for ((rule, host), counters) in &self.per_rule {
                let labels = [("rule", rule.as_str()), ("host", host.as_str())];
                ConstCounter::new(field(counters)).encode(metric.encode_family(&labels)?)?;
            }
        }
        let counter = ConstCounter::new(0_u64);
        let mut metric = encoder.encode_descriptor(
            "unselected_connections",
            "Connections to routed destinations from tasks that are not selected (they went direct), per hostname",
            None,
            counter.metric_type(),
        )?;
        for (host, count) in &self.unselected {
            let labels = [("host", host.as_str())];
            ConstCounter::new(*count).encode(metric.encode_family(&labels)?)?;
        }
        for (stat, name, help) in GLOBAL {
            let value = self
                .stats
                .iter()
                .find(|(n, _)| *n == stat)
                .map_or(0, |(_, v)| *v);
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// The datapath's families with one series each, as if one rule had counted: what a scrape
/// shows once the maps are pinned, without them (for tests that need the names).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct OneOfEach;

#[cfg(test)]
impl Collector for OneOfEach {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let names = ("rule".to_owned(), "host".to_owned());
        Reading {
            per_rule: BTreeMap::from([(names, Counters::default())]),
            unselected: BTreeMap::from([("host".to_owned(), 0)]),
            stats: Vec::new(),
        }
        .encode(encoder)
    }
}
