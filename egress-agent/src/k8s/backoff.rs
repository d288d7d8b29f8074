//! The watches' retry backoff: exponential with jitter, and reset only by a watch that has
//! proved healthy.
//!
//! kube-runtime's `default_backoff()` resets its backoff on every `Ok` the watcher yields, and a
//! watcher yields `Event::Init` at the start of every relist, before its LIST is even sent. A
//! watch whose LIST always fails (a resource the server does not serve, a missing RBAC rule, an
//! overloaded server) thus retried about every second forever; on thousands of nodes, a retry
//! storm against the API server exactly when it struggles.
//!
//! Here the delay grows with each failure and goes back to the start only when the watch has
//! completed a list (`InitDone`, see [`WatchBackoff::synced`]) and then run for
//! [`HEALTHY_AFTER`] without error. The exponential sequence and its jitter are `backon`'s (the
//! crate kube-runtime's own backoff uses); the reset rule is ours.
//!
//! With the defaults, successive sleeps lie in 1-2 s, 2-4 s, 4-8 s, ..., 128-256 s, then
//! 150-300 s: never more than [`MAX_DELAY`], and spread so that nodes that failed together do
//! not retry together.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use tokio::time::Instant;
use tracing::debug;

/// The first delay, before jitter (the first sleep lies between it and twice it).
pub(crate) const INITIAL_DELAY: Duration = Duration::from_secs(1);
/// The longest sleep, jitter included.
pub(crate) const MAX_DELAY: Duration = Duration::from_mins(5);
/// How long a watch must run without error after completing a list for its next failure to
/// start again from [`INITIAL_DELAY`].
pub(crate) const HEALTHY_AFTER: Duration = Duration::from_mins(1);

/// How much the delay grows with each consecutive failure.
const FACTOR: f32 = 2.0;
/// Bounds the settings are clamped to: the initial delay...
const INITIAL_DELAY_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_mins(1));
/// ... the longest sleep (at least twice the initial delay, whatever this says)...
const MAX_DELAY_LIMIT: Duration = Duration::from_hours(1);
/// ... and the healthy period.
const HEALTHY_AFTER_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_hours(1));

/// `backon`'s exponential sequence.
type Delays = <ExponentialBuilder as backon::BackoffBuilder>::Backoff;

/// One watch's backoff: ask [`WatchBackoff::failed`] how long to wait after each error, and
/// tell [`WatchBackoff::synced`] each completed list.
#[derive(Debug)]
pub(crate) struct WatchBackoff {
    /// Builds the sequence again on a reset.
    builder: ExponentialBuilder,
    /// The delays still to come.
    delays: Delays,
    /// The longest sleep.
    max: Duration,
    /// How long a synced watch must run without error to reset the delay.
    healthy_after: Duration,
    /// When the watch last completed a list since its last failure.
    synced_at: Option<Instant>,
    /// Consecutive failures, this one included, for logs.
    failures: u32,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self::new(INITIAL_DELAY, MAX_DELAY, HEALTHY_AFTER)
    }
}

impl WatchBackoff {
    /// A backoff whose first sleep lies in `[initial, 2 × initial)`, each next one twice longer
    /// up to `max` (jitter included), reset once a synced watch ran for `healthy_after`.
    /// Out-of-range settings are clamped: `initial` to 100 ms..1 min, `max` to
    /// `2 × initial`..1 h, `healthy_after` to 1 s..1 h.
    pub(crate) fn new(initial: Duration, max: Duration, healthy_after: Duration) -> Self {
        let initial = initial.clamp(INITIAL_DELAY_RANGE.0, INITIAL_DELAY_RANGE.1);
        let max = max.clamp(initial * 2, MAX_DELAY_LIMIT);
        let healthy_after = healthy_after.clamp(HEALTHY_AFTER_RANGE.0, HEALTHY_AFTER_RANGE.1);
        // Jitter adds up to 100 % of the delay: half the longest sleep is the delay's cap.
        let builder = ExponentialBuilder::default()
            .with_min_delay(initial)
            .with_max_delay(max / 2)
            .with_factor(FACTOR)
            .with_jitter()
            .without_max_times();
        Self {
            builder,
            delays: builder.build(),
            max,
            healthy_after,
            synced_at: None,
            failures: 0,
        }
    }

    /// The watch completed a list (`InitDone`): from now on it counts as healthy until its
    /// next failure. A relist's `Init` proves nothing and is not reported.
    pub(crate) fn synced(&mut self) {
        self.synced_at.get_or_insert_with(Instant::now);
    }

    /// The watch failed: how long to wait before it retries.
    pub(crate) fn failed(&mut self) -> Duration {
        let now = Instant::now();
        if let Some(synced_at) = self.synced_at.take() {
            let healthy_for = now.saturating_duration_since(synced_at);
            if healthy_for >= self.healthy_after {
                debug!(
                    ?healthy_for,
                    failures = self.failures,
                    "the watch was healthy: backoff starts again from the initial delay"
                );
                self.delays = self.builder.build();
                self.failures = 0;
            }
        }
        self.failures = self.failures.saturating_add(1);
        // The sequence never ends (no max times); f32 rounding aside, it stays under `max`.
        self.delays.next().unwrap_or(self.max).min(self.max)
    }

    /// The server said the watch's resource version is gone (410): it answers, and only a
    /// relist helps, so the relist waits the initial delay (with jitter), neither growing the
    /// delay nor counting as a failure. Each such relist is a LIST the server completes, so
    /// these cannot run faster than one per initial delay.
    pub(crate) fn desynced(&self) -> Duration {
        self.builder
            .build()
            .next()
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// Consecutive failures so far, the last one included.
    pub(crate) const fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
#[path = "backoff_tests.rs"]
mod tests;
