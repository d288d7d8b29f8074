//! Prometheus metrics, in the `OpenMetrics` text format (`prometheus-client`).
//!
//! * Counted where they happen: DNS queries and their latency, reconciles, watch restarts.
//! * Set by the engine after each reconcile: routes by source, map fill ratios, selected pods
//!   whose cgroup was not found.
//! * Read from the pinned maps at each scrape ([`datapath::Datapath`]): what the programs did,
//!   per rule and hostname.

mod datapath;

use std::sync::{Arc, OnceLock};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

pub use datapath::Datapath;

type Labels = Vec<(&'static str, String)>;
type Ratio = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Every metric the agent updates itself.
#[derive(Debug)]
struct Metrics {
    dns_queries: Family<Labels, Counter>,
    dns_latency: Histogram,
    reconcile_errors: Counter,
    reconcile_duration: Histogram,
    watch_restarts: Family<Labels, Counter>,
    routes: Family<Labels, Gauge>,
    map_fill: Family<Labels, Ratio>,
    cgroups_missing: Gauge,
}

impl Metrics {
    fn new() -> Self {
        Self {
            dns_queries: Family::default(),
            // 1 ms .. ~4 s
            dns_latency: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 13),
            ),
            reconcile_errors: Counter::default(),
            // 100 µs .. ~3 s
            reconcile_duration: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 15),
            ),
            watch_restarts: Family::default(),
            routes: Family::default(),
            map_fill: Family::default(),
            cgroups_missing: Gauge::default(),
        }
    }
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// How a DNS query the agent sent ended (the `result` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryResult {
    /// Addresses.
    Answer,
    /// The name does not exist.
    NxDomain,
    /// The name exists without addresses of the type asked.
    NoData,
    /// No usable answer (timeout, refused, malformed).
    Error,
}

impl QueryResult {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Answer => "answer",
            Self::NxDomain => "nxdomain",
            Self::NoData => "nodata",
            Self::Error => "error",
        }
    }
}

/// A DNS query the agent sent.
pub fn dns_query(result: QueryResult, seconds: f64) {
    let m = metrics();
    m.dns_queries
        .get_or_create(&vec![("result", result.as_str().to_owned())])
        .inc();
    m.dns_latency.observe(seconds);
}

/// A reconcile of the maps ended.
pub fn reconciled(ok: bool, seconds: f64) {
    let m = metrics();
    if !ok {
        m.reconcile_errors.inc();
    }
    m.reconcile_duration.observe(seconds);
}

/// A Kubernetes watch failed and restarts with backoff.
pub fn watch_restarted(kind: &'static str) {
    metrics()
        .watch_restarts
        .get_or_create(&vec![("kind", kind.to_owned())])
        .inc();
}

/// Routes installed, by source (`static`, `resolved`, `learned`).
pub fn set_routes(source: crate::route::Source, count: usize) {
    metrics()
        .routes
        .get_or_create(&vec![("source", source.to_string())])
        .set(i64::try_from(count).unwrap_or(i64::MAX));
}

/// How full a map is (entries / capacity).
pub fn set_map_fill(map: &'static str, ratio: f64) {
    metrics()
        .map_fill
        .get_or_create(&vec![("map", map.to_owned())])
        .set(ratio);
}

/// Selected pods on this node whose cgroup was not found.
pub fn set_cgroups_missing(count: usize) {
    metrics()
        .cgroups_missing
        .set(i64::try_from(count).unwrap_or(i64::MAX));
}

/// The registry: the metrics `m` and, when given, the datapath's.
fn registry(m: &Metrics, datapath: Option<Datapath>) -> Registry {
    let mut registry = Registry::with_prefix("egress_agent");
    registry.register(
        "dns_queries",
        "DNS queries the agent sent for configured hostnames, by result",
        m.dns_queries.clone(),
    );
    registry.register_with_unit(
        "dns_query_duration",
        "Latency of the agent's DNS queries",
        prometheus_client::registry::Unit::Seconds,
        m.dns_latency.clone(),
    );
    registry.register(
        "reconcile_errors",
        "Reconciles that failed (the maps were only partly updated)",
        m.reconcile_errors.clone(),
    );
    registry.register_with_unit(
        "reconcile_duration",
        "Time to compute the desired maps and write the difference",
        prometheus_client::registry::Unit::Seconds,
        m.reconcile_duration.clone(),
    );
    registry.register(
        "watch_restarts",
        "Kubernetes watches that failed and restarted, by kind",
        m.watch_restarts.clone(),
    );
    registry.register(
        "routes",
        "Routed addresses by source (static, resolved by the agent, learned from answers)",
        m.routes.clone(),
    );
    registry.register(
        "map_fill_ratio",
        "Entries over capacity, per map",
        m.map_fill.clone(),
    );
    registry.register(
        "pod_cgroups_missing",
        "Selected pods on this node whose cgroup was not found (not redirected)",
        m.cgroups_missing.clone(),
    );
    if let Some(datapath) = datapath {
        registry.register_collector(Box::new(Arc::new(datapath)));
    }
    registry
}

/// The exposition: `OpenMetrics` text.
pub fn render(datapath: Option<Datapath>) -> String {
    let mut out = String::new();
    if let Err(err) = encode(&mut out, &registry(metrics(), datapath)) {
        tracing::warn!(error = %err, "cannot encode metrics");
    }
    out
}

/// The same exposition in the classic Prometheus text format (0.0.4), for scrapers and tools
/// that do not ask for `OpenMetrics` (`promtool check metrics`, curl): a counter's `HELP`
/// and `TYPE` name its `_total` samples, and `UNIT` and `EOF` lines go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// An exposition with one series in every family the agent exports, the datapath's included
/// (as a scrape shows them once the maps are pinned and a rule has counted): the names a
/// query or an alert may use. A family without series is left out of an exposition, so each
/// of the [`Metrics`] families gets one here.
#[cfg(test)]
pub(crate) fn exposition_of_every_family() -> String {
    let m = Metrics::new();
    m.dns_queries.get_or_create(&Vec::new()).inc();
    m.watch_restarts.get_or_create(&Vec::new()).inc();
    m.routes.get_or_create(&Vec::new()).set(0);
    m.map_fill.get_or_create(&Vec::new()).set(0.0);
    let mut registry = registry(&m, None);
    registry.register_collector(Box::new(datapath::OneOfEach));
    let mut out = String::new();
    encode(&mut out, &registry).expect("the exposition encodes");
    out
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
