//! Liveness: every long-running task beats a heartbeat; `/live` fails when one has been
//! silent for longer than it promised (a stuck DNS engine, watch loop or reconcile loop), or
//! when one ended that should run forever (the cgroup watch thread).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

#[derive(Debug)]
struct Beat {
    last: Instant,
    max_silence: Duration,
    ended: bool,
}

/// Every task's heartbeat; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Health {
    beats: Arc<Mutex<BTreeMap<&'static str, Beat>>>,
}

/// One task's heartbeat. Dropping it marks the task ended.
#[derive(Debug)]
pub struct Heartbeat {
    name: &'static str,
    health: Health,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Beat>> {
        self.beats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a task that beats at least every `max_silence`.
    pub fn register(&self, name: &'static str, max_silence: Duration) -> Heartbeat {
        self.lock().insert(
            name,
            Beat {
                last: Instant::now(),
                max_silence,
                ended: false,
            },
        );
        Heartbeat {
            name,
            health: self.clone(),
        }
    }

    /// The tasks that are stuck or ended, with why; empty when all is well.
    pub fn problems(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter_map(|(name, beat)| {
                if beat.ended {
                    Some(format!("{name}: ended"))
                } else {
                    let silent = beat.last.elapsed();
                    (silent > beat.max_silence)
                        .then(|| format!("{name}: silent for {:.0}s", silent.as_secs_f64()))
                }
            })
            .collect()
    }
}

impl Heartbeat {
    /// The task is making progress.
    pub fn beat(&self) {
        if let Some(beat) = self.health.lock().get_mut(self.name) {
            beat.last = Instant::now();
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(beat) = self.health.lock().get_mut(self.name) {
            beat.ended = true;
        }
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
