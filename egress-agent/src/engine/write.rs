//! Bringing the maps to an intent and the facts: compute the desired state, write it by diff,
//! persist the resolver's answers, and report sizes and conflicts. A write whose inputs are
//! those of the last complete one is skipped, so a periodic resync of a million static routes
//! costs a comparison of the facts rather than a recomputation.

use std::sync::Arc;

use tracing::{debug, info, warn};

use super::{
    ConflictStatus, DesiredFacts, Engine, EngineError, ReconcileError, compute, persist, reconcile,
    record_sizes,
};
use crate::{clock, intent::Intent};

/// The inputs of the last write that succeeded in full.
pub(super) struct Written {
    /// The intent it wrote (the same `Arc`: a new intent from the source is a new one).
    intent: Arc<Intent>,
    facts: DesiredFacts,
}

impl Written {
    fn is(&self, intent: &Arc<Intent>, facts: &DesiredFacts) -> bool {
        Arc::ptr_eq(&self.intent, intent) && self.facts == *facts
    }
}

impl Engine {
    /// Computes the desired state and writes it by diff; persists the resolver's answers.
    /// Nothing is computed when the intent and the facts are those of the last write that
    /// succeeded in full: the maps already hold what they would give.
    pub(super) fn write(&mut self, intent: &Arc<Intent>) -> Result<(), EngineError> {
        let Some(attached) = self.attached.as_mut() else {
            return Ok(());
        };
        let facts = DesiredFacts {
            resolved: self
                .dns
                .routed()
                .into_iter()
                .map(|(host, addresses)| {
                    let addresses = addresses
                        .into_iter()
                        .map(|(addr, leaves)| (addr, clock::instant_ns(leaves)))
                        .collect();
                    (host, addresses)
                })
                .collect(),
            servers: self.servers.clone(),
        };
        if attached
            .written
            .as_ref()
            .is_some_and(|w| w.is(intent, &facts))
        {
            debug!("intent and facts unchanged since the last write; nothing to do");
            return Ok(());
        }
        // Set again only once everything below succeeds: a failed or partial write (a full
        // map) is computed and retried in full next time.
        attached.written = None;
        let desired = compute(intent, &facts, &mut attached.ids, attached.name_seed)?;
        for conflict in &desired.conflicts {
            if self.warned_conflicts.insert(conflict.clone()) {
                warn!(
                    destination = conflict.destination, port = conflict.port, protocol = %conflict.protocol,
                    winner = %conflict.winner, loser = %conflict.loser,
                    "two rules claim one destination with different gateways for the same workloads; the first rule wins"
                );
            }
        }
        let result = reconcile(
            &mut attached.maps,
            &mut attached.installed,
            &desired,
            attached.name_seed,
        );
        persist::save(
            &mut attached.maps,
            &mut attached.persisted,
            &desired,
            &self.dns,
        )?;
        let (routes, cgroups) = (
            desired.addresses.len() + desired.cidrs.len(),
            desired.cgroups.len(),
        );
        record_sizes(&desired);
        {
            let mut shared = self.status.lock();
            shared.conflicts.clone_from(&desired.conflicts);
            shared.agent.routes = routes;
            shared.agent.cgroups = cgroups;
            shared.agent.conflicts = desired
                .conflicts
                .iter()
                .map(|c| ConflictStatus {
                    destination: c.destination.clone(),
                    port: c.port,
                    protocol: c.protocol,
                    winner: c.winner.to_string(),
                    loser: c.loser.to_string(),
                })
                .collect();
        }
        match result {
            Ok(changes) => {
                attached.written = Some(Written {
                    intent: Arc::clone(intent),
                    facts,
                });
                if changes.any() {
                    info!(
                        ?changes,
                        routes,
                        targets = desired.targets.len(),
                        cgroups,
                        "maps updated"
                    );
                }
                Ok(())
            }
            Err(ReconcileError::Datapath(err)) => Err(err.into()),
            // Reported like any failed reconcile: status, the error metric, and a retry.
            Err(err @ ReconcileError::Full { .. }) => Err(err.into()),
        }
    }
}
