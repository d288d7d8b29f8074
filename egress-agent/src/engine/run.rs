//! The engine's loop, the same for every mode: take each new state of the source, reconcile
//! when the DNS engine's answers change, and on every resync expire learned addresses,
//! re-check the maps and return freed heap to the kernel. SIGTERM and SIGINT end it and leave
//! the pinned programs and maps working.

use std::time::Duration;

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use super::Engine;
use crate::intent::Intent;

/// What a source currently says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceState {
    /// Where the intent comes from (a file path, `kubernetes (node N)`), for status.
    pub description: String,
    /// The last valid intent; `None` until there is one.
    pub intent: Option<Intent>,
    /// Why the source's last input was rejected; the last valid intent stays in force.
    pub error: Option<String>,
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(
    mut engine: Engine,
    mut source: watch::Receiver<SourceState>,
    resync_interval: Duration,
    heartbeat: crate::health::Heartbeat,
) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut resync = tokio::time::interval(resync_interval);
    resync.tick().await;
    let mut dns_changed = engine.dns_changed.clone();
    engine.set_source(&source.borrow_and_update());
    engine.apply();
    loop {
        heartbeat.beat();
        tokio::select! {
            Ok(()) = source.changed() => {
                engine.set_source(&source.borrow_and_update());
                engine.apply();
            }
            Ok(()) = dns_changed.changed() => engine.apply(),
            _ = resync.tick() => {
                engine.expire_learned();
                engine.apply();
                crate::heap::trim();
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    engine.log_shutdown();
    Ok(())
}
