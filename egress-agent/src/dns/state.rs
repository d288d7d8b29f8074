//! The state of one hostname, as a pure state machine over answers, failures and time.
//!
//! An address is routed while it is in the current answer and for `grace` after the TTL of
//! the last answer that contained it ran out: clients and runtimes cache answers, so an address
//! a client may still use must stay routed or its connections leak past the gateway.
//!
//! * A timeout or SERVFAIL keeps every address as long as the failure lasts (marked stale).
//! * NXDOMAIN or NODATA is a real answer: the addresses age out through the grace period.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use super::resolve::Resolution;

/// Refresh timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long an address stays routed after its TTL ran out.
    pub grace: Duration,
    /// TTLs below this are raised to it.
    pub min_ttl: Duration,
    /// TTLs above this are lowered to it.
    pub max_ttl: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            grace: Duration::from_mins(5),
            min_ttl: Duration::ZERO,
            max_ttl: Duration::from_hours(24),
        }
    }
}

/// The shortest refresh interval: DNS TTLs are whole seconds and 0 means "do not cache".
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Longest wait between retries while a server fails.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Health of a hostname.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not resolved yet.
    Pending,
    /// The last query got addresses.
    Fresh,
    /// The last query failed (timeout, SERVFAIL); the last known addresses are kept.
    Stale,
    /// The name does not exist.
    NxDomain,
    /// The name has no A or AAAA records.
    NoData,
}

/// One address of a hostname.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    /// When the TTL of the last answer containing it runs out.
    pub expires: Instant,
    /// Whether the last real answer contained it.
    pub in_answer: bool,
}

/// The state of one hostname.
#[derive(Clone, Debug)]
pub struct HostState {
    /// Addresses still routed.
    pub addresses: BTreeMap<IpAddr, Tracked>,
    /// Health after the last query.
    pub health: Health,
    /// The last error, if the last query failed.
    pub last_error: Option<String>,
    /// Queries that failed since the last success.
    pub consecutive_failures: u32,
    /// Queries that failed in total.
    pub failures: u64,
    /// When to query next.
    pub next_refresh: Instant,
}

impl HostState {
    /// A hostname to resolve at once.
    pub fn new(now: Instant) -> Self {
        Self {
            addresses: BTreeMap::new(),
            health: Health::Pending,
            last_error: None,
            consecutive_failures: 0,
            failures: 0,
            next_refresh: now,
        }
    }

    /// Applies a real answer received at `now`; `jitter` in [0, 1) spreads refreshes.
    pub fn answer(&mut self, now: Instant, resolution: &Resolution, timing: &Timing, jitter: f64) {
        self.last_error = None;
        self.consecutive_failures = 0;
        for tracked in self.addresses.values_mut() {
            tracked.in_answer = false;
        }
        let ttl = match resolution {
            Resolution::Addresses(addresses) => {
                self.health = Health::Fresh;
                for (addr, ttl) in addresses {
                    // A shorter TTL now never cuts short what a client cached from an earlier
                    // answer.
                    let earlier = self.addresses.get(addr).map(|t| t.expires);
                    let expires = earlier
                        .into_iter()
                        .fold(now + clamp(*ttl, timing), Instant::max);
                    self.addresses.insert(
                        *addr,
                        Tracked {
                            expires,
                            in_answer: true,
                        },
                    );
                }
                addresses.values().copied().min().unwrap_or(0)
            }
            Resolution::NxDomain(ttl) => {
                self.health = Health::NxDomain;
                *ttl
            }
            Resolution::NoData(ttl) => {
                self.health = Health::NoData;
                *ttl
            }
        };
        // Refresh a little before the TTL runs out (up to 10% early), never more often than
        // once a second.
        let interval = clamp(ttl, timing).max(MIN_REFRESH);
        self.next_refresh = now
            + interval
                .mul_f64(1.0 - 0.1 * jitter.clamp(0.0, 1.0))
                .max(MIN_REFRESH);
        self.expire(now, timing);
    }

    /// Applies a failed query at `now`: keeps every address (stale) and retries with backoff.
    pub fn failure(&mut self, now: Instant, error: String, timing: &Timing) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.failures += 1;
        self.last_error = Some(error);
        if !self.addresses.is_empty()
            || self.health == Health::Fresh
            || self.health == Health::Stale
        {
            self.health = Health::Stale;
        }
        // Nothing ages out while the server cannot be asked.
        for tracked in self.addresses.values_mut() {
            tracked.expires = tracked.expires.max(now);
        }
        let backoff =
            MIN_REFRESH * 2_u32.saturating_pow(self.consecutive_failures.saturating_sub(1).min(5));
        self.next_refresh = now + backoff.min(MAX_RETRY).min(timing.max_ttl.max(MIN_REFRESH));
    }

    /// Whether addresses may age out: not while queries fail (stale), nor before the first
    /// answer (addresses carried over from a previous run wait for it).
    fn ages(&self) -> bool {
        !matches!(self.health, Health::Stale | Health::Pending)
    }

    /// Drops addresses whose grace period is over.
    pub fn expire(&mut self, now: Instant, timing: &Timing) {
        if !self.ages() {
            return;
        }
        self.addresses
            .retain(|_, tracked| tracked.in_answer || tracked.expires + timing.grace > now);
    }

    /// When the next address leaves (for scheduling the next expiry pass).
    pub fn next_expiry(&self, timing: &Timing) -> Option<Instant> {
        if !self.ages() {
            return None; // see `expire`
        }
        self.addresses
            .values()
            .filter(|tracked| !tracked.in_answer)
            .map(|tracked| tracked.expires + timing.grace)
            .min()
    }
}

fn clamp(ttl: u32, timing: &Timing) -> Duration {
    Duration::from_secs(u64::from(ttl)).clamp(timing.min_ttl, timing.max_ttl.max(timing.min_ttl))
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
