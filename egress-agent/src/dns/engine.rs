//! The resolver engine: keeps every configured hostname refreshed at its TTL and tells the
//! agent when the set of addresses to route changes.
//!
//! One hostname failing never delays the others: queries run concurrently (bounded), each
//! with its own timeout, and are scheduled independently.

use std::{
    collections::{BTreeMap, BTreeSet},
    hash::{BuildHasher as _, RandomState},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::{sync::Notify, sync::watch, task::JoinSet};
use tracing::{debug, info, warn};

use crate::metrics::QueryResult;

use super::{
    query::QueryError,
    resolve::{Resolution, resolve},
    state::{Health, HostState, Timing},
};

/// Resolver settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// Servers, tried in order.
    pub servers: Vec<SocketAddr>,
    /// Grace and TTL clamps.
    pub timing: Timing,
    /// Per-query timeout.
    pub timeout: Duration,
    /// Queries in flight at once.
    pub concurrency: usize,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timing: Timing::default(),
            timeout: Duration::from_secs(2),
            concurrency: 32,
        }
    }
}

/// A hostname as the status endpoint shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    /// The hostname.
    pub name: String,
    /// Its health.
    pub state: Health,
    /// Whether the addresses are kept only because queries fail.
    pub stale: bool,
    /// Routed addresses.
    pub addresses: Vec<AddressStatus>,
    /// The last error, while queries fail.
    pub last_error: Option<String>,
    /// Failed queries in total.
    pub failures: u64,
    /// Seconds until the next query.
    pub next_refresh_in_secs: f64,
}

/// One routed address of a hostname.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressStatus {
    /// The address.
    pub address: IpAddr,
    /// Whether the last answer contained it.
    pub in_answer: bool,
    /// Seconds until its TTL runs out (negative: already ran out).
    pub expires_in_secs: f64,
    /// Seconds until it leaves the routes if no answer contains it again.
    pub leaves_in_secs: f64,
}

#[derive(Debug)]
struct Shared {
    settings: DnsSettings,
    hosts: BTreeMap<String, HostState>,
    in_flight: BTreeSet<String>,
    generation: u64,
}

/// Handle to the engine; cheap to clone.
#[derive(Clone, Debug)]
pub struct DnsEngine {
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    changed: Arc<watch::Sender<u64>>,
}

impl DnsEngine {
    /// A new engine and a receiver that changes whenever the routed addresses change.
    pub fn new(settings: DnsSettings) -> (Self, watch::Receiver<u64>) {
        let (changed, receiver) = watch::channel(0);
        let engine = Self {
            shared: Arc::new(Mutex::new(Shared {
                settings,
                hosts: BTreeMap::new(),
                in_flight: BTreeSet::new(),
                generation: 0,
            })),
            wake: Arc::new(Notify::new()),
            changed: Arc::new(changed),
        };
        (engine, receiver)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the settings; hostnames keep their state.
    pub fn set_settings(&self, settings: DnsSettings) {
        let mut shared = self.lock();
        if shared.settings != settings {
            shared.settings = settings;
            drop(shared);
            self.wake.notify_one();
        }
    }

    /// Sets the hostnames to keep resolved: new ones are queried at once, removed ones
    /// dropped, unchanged ones left exactly as they are.
    pub fn set_hosts(&self, hosts: &BTreeSet<String>) {
        let now = Instant::now();
        let mut shared = self.lock();
        let before = shared.hosts.len();
        shared.hosts.retain(|name, _| hosts.contains(name));
        let removed = before != shared.hosts.len();
        for name in hosts {
            shared
                .hosts
                .entry(name.clone())
                .or_insert_with(|| HostState::new(now));
        }
        if removed {
            shared.generation += 1;
            self.changed.send_replace(shared.generation);
        }
        drop(shared);
        self.wake.notify_one();
    }

    /// The addresses to route for each hostname, with when each leaves the routes unless an
    /// answer contains it again (its TTL plus grace).
    pub fn routed(&self) -> BTreeMap<String, BTreeMap<IpAddr, Instant>> {
        let shared = self.lock();
        let grace = shared.settings.timing.grace;
        shared
            .hosts
            .iter()
            .map(|(name, state)| {
                let addresses = state
                    .addresses
                    .iter()
                    .map(|(addr, tracked)| (*addr, tracked.expires + grace))
                    .collect();
                (name.clone(), addresses)
            })
            .collect()
    }

    /// Each hostname's addresses with when their TTL runs out: what a restart starts from.
    pub fn answers(&self) -> BTreeMap<String, BTreeMap<IpAddr, Instant>> {
        self.lock()
            .hosts
            .iter()
            .map(|(name, state)| {
                let addresses = state
                    .addresses
                    .iter()
                    .map(|(addr, tracked)| (*addr, tracked.expires))
                    .collect();
                (name.clone(), addresses)
            })
            .collect()
    }

    /// Gives a configured hostname an address a previous run knew, whose TTL runs out at
    /// `expires` (kept as long as queries fail, like any other address; an answer that lacks it
    /// lets it age out through the grace period).
    pub fn seed(&self, host: &str, addr: IpAddr, expires: Instant) {
        let mut shared = self.lock();
        let Some(state) = shared.hosts.get_mut(host) else {
            return;
        };
        let tracked = state
            .addresses
            .entry(addr)
            .or_insert(super::state::Tracked {
                expires,
                in_answer: false,
            });
        tracked.expires = tracked.expires.max(expires);
        shared.generation += 1;
        self.changed.send_replace(shared.generation);
    }

    /// Every hostname's state.
    pub fn status(&self) -> Vec<HostStatus> {
        let now = Instant::now();
        let shared = self.lock();
        let grace = shared.settings.timing.grace;
        let secs = |at: Instant| {
            if at >= now {
                (at - now).as_secs_f64()
            } else {
                -(now - at).as_secs_f64()
            }
        };
        shared
            .hosts
            .iter()
            .map(|(name, state)| HostStatus {
                name: name.clone(),
                state: state.health,
                stale: state.health == Health::Stale,
                addresses: state
                    .addresses
                    .iter()
                    .map(|(address, tracked)| AddressStatus {
                        address: *address,
                        in_answer: tracked.in_answer,
                        expires_in_secs: secs(tracked.expires),
                        leaves_in_secs: secs(tracked.expires + grace),
                    })
                    .collect(),
                last_error: state.last_error.clone(),
                failures: state.failures,
                next_refresh_in_secs: secs(state.next_refresh).max(0.0),
            })
            .collect()
    }

    /// Runs the engine forever.
    pub async fn run(self, heartbeat: crate::health::Heartbeat) {
        let mut queries: JoinSet<(String, Result<Resolution, QueryError>)> = JoinSet::new();
        loop {
            heartbeat.beat();
            let next = self.start_due(&mut queries);
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(next));
            tokio::select! {
                Some(Ok((name, result))) = queries.join_next(), if !queries.is_empty() => self.apply(&name, &result),
                () = sleep => self.expire(),
                () = self.wake.notified() => {}
            }
        }
    }

    /// Starts queries for due hostnames (up to the concurrency bound); returns when the next
    /// one is due or an address leaves.
    fn start_due(
        &self,
        queries: &mut JoinSet<(String, Result<Resolution, QueryError>)>,
    ) -> Instant {
        let now = Instant::now();
        let mut shared = self.lock();
        let settings = shared.settings.clone();
        let mut next = now + Duration::from_mins(1);
        let due: Vec<String> = shared
            .hosts
            .iter()
            .filter(|(name, _)| !shared.in_flight.contains(*name))
            .filter_map(|(name, state)| {
                if state.next_refresh <= now {
                    Some(name.clone())
                } else {
                    next = next.min(state.next_refresh);
                    None
                }
            })
            .collect();
        for state in shared.hosts.values() {
            if let Some(expiry) = state.next_expiry(&settings.timing) {
                next = next.min(expiry);
            }
        }
        let room = settings.concurrency.saturating_sub(queries.len());
        for name in due.iter().take(room) {
            shared.in_flight.insert(name.clone());
            let servers = settings.servers.clone();
            let timeout = settings.timeout;
            let name = name.clone();
            queries.spawn(async move {
                let started = Instant::now();
                let result = resolve(&servers, &name, timeout).await;
                let outcome = match &result {
                    Ok(Resolution::Addresses(_)) => QueryResult::Answer,
                    Ok(Resolution::NxDomain(_)) => QueryResult::NxDomain,
                    Ok(Resolution::NoData(_)) => QueryResult::NoData,
                    Err(_) => QueryResult::Error,
                };
                crate::metrics::dns_query(outcome, started.elapsed().as_secs_f64());
                (name, result)
            });
        }
        // More due than may run: the rest start when a running query finishes (that wakes
        // the loop), so no timer is needed for them.
        next
    }

    fn apply(&self, name: &str, result: &Result<Resolution, QueryError>) {
        let now = Instant::now();
        let mut shared = self.lock();
        shared.in_flight.remove(name);
        let timing = shared.settings.timing;
        let Some(state) = shared.hosts.get_mut(name) else {
            return; // removed while in flight
        };
        let before: BTreeSet<IpAddr> = state.addresses.keys().copied().collect();
        let health_before = state.health;
        match result {
            Ok(resolution) => state.answer(now, resolution, &timing, jitter(name, now)),
            Err(err) => state.failure(now, err.to_string(), &timing),
        }
        let after: BTreeSet<IpAddr> = state.addresses.keys().copied().collect();
        log_transition(name, health_before, state);
        if before != after {
            debug!(host = name, addresses = ?after, "routed addresses changed");
            shared.generation += 1;
            self.changed.send_replace(shared.generation);
        }
    }

    fn expire(&self) {
        let now = Instant::now();
        let mut shared = self.lock();
        let timing = shared.settings.timing;
        let mut changed = false;
        for (name, state) in &mut shared.hosts {
            let before = state.addresses.len();
            state.expire(now, &timing);
            if state.addresses.len() != before {
                info!(
                    host = name,
                    remaining = state.addresses.len(),
                    "addresses left the routes after their grace period"
                );
                changed = true;
            }
        }
        if changed {
            shared.generation += 1;
            self.changed.send_replace(shared.generation);
        }
    }
}

/// Logs once per change of health.
fn log_transition(name: &str, before: Health, state: &HostState) {
    if before == state.health {
        return;
    }
    let error = state.last_error.as_deref().unwrap_or("");
    match (&state.health, before) {
        (Health::Fresh, Health::Stale) => info!(host = name, "resolving again; stale mark cleared"),
        (Health::Fresh, _) => info!(host = name, addresses = state.addresses.len(), "resolved"),
        (Health::Stale, _) => warn!(
            host = name,
            error,
            kept = state.addresses.len(),
            "queries failing; keeping the last known addresses (stale)"
        ),
        (Health::NxDomain, _) => warn!(
            host = name,
            "NXDOMAIN: the name does not exist; its addresses age out"
        ),
        (Health::NoData, _) => warn!(host = name, "no A or AAAA records; its addresses age out"),
        (Health::Pending, _) => warn!(host = name, error, "cannot resolve yet"),
    }
}

/// A number in [0, 1) that differs per hostname and refresh.
#[expect(clippy::cast_precision_loss, reason = "only the top bits matter")]
fn jitter(name: &str, now: Instant) -> f64 {
    let hash = RandomState::new().hash_one((name, now));
    (hash >> 11) as f64 / (1_u64 << 53) as f64
}
