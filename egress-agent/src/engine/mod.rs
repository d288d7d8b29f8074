//! The engine: one for every mode. It takes the source's [`Intent`], attaches the programs,
//! keeps the DNS engine resolving the intent's hostnames, computes the desired map contents
//! from the intent and the facts learned at runtime, and writes them by diff.
//!
//! ```text
//! source ─► Intent ─┐
//!                   ├─► desired::compute ─► Desired ─► reconcile (diff) ─► maps
//! facts ────────────┘      (pure)
//!   DnsEngine: resolved addresses
//! ```

mod desired;
mod reconcile;
mod run;

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::watch;
use tracing::{error, info, warn};

pub use desired::Conflict;
pub use run::{SourceState, run};

use desired::compute;
use reconcile::reconcile;

use crate::{
    bpffs::PinDir,
    cgroupfs::Hierarchy,
    datapath::{self, DatapathError, Maps},
    dns::{DnsEngine, DnsSettings, HostStatus, parse_resolv_conf, state::Timing},
    intent::{DnsIntent, Intent},
    status::{AgentStatus, ConflictStatus, StatusDocument},
};

/// Errors putting an intent in force.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The attach cgroup is not usable.
    #[error("attach cgroup")]
    AttachPath(#[source] crate::cgroupfs::CgroupError),
    /// The datapath could not be attached or opened.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
}

/// What the engine learned at runtime, for sources that report it (Kubernetes Events).
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Destinations two rules claim, from the last reconcile.
    pub conflicts: Vec<Conflict>,
    /// Every hostname's state.
    pub hosts: Vec<HostStatus>,
}

#[derive(Debug, Default)]
struct Shared {
    agent: AgentStatus,
    conflicts: Vec<Conflict>,
}

/// A read-only view of the engine's state, for the admin endpoint and for sources that report
/// runtime facts; cheap to clone.
#[derive(Clone, Debug)]
pub struct StatusHandle {
    shared: Arc<Mutex<Shared>>,
    dns: DnsEngine,
}

impl StatusHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The `/status` document.
    pub fn document(&self) -> StatusDocument {
        StatusDocument {
            agent: self.lock().agent.clone(),
            hosts: self.dns.status(),
        }
    }

    /// Whether the programs are attached and an intent is in force.
    pub fn ready(&self) -> bool {
        let shared = self.lock();
        shared.agent.attached && shared.agent.config_loaded
    }

    /// What the engine learned at runtime.
    pub fn facts(&self) -> Facts {
        Facts {
            conflicts: self.lock().conflicts.clone(),
            hosts: self.dns.status(),
        }
    }
}

/// The engine.
pub struct Engine {
    pins: PinDir,
    hierarchy: Hierarchy,
    attached_to: Option<PathBuf>,
    maps: Option<Maps>,
    dns: DnsEngine,
    dns_changed: watch::Receiver<u64>,
    status: StatusHandle,
    /// The intent in force (the source's last valid one).
    intent: Option<Intent>,
    /// Conflicts already warned about, so each is logged once.
    warned_conflicts: BTreeSet<Conflict>,
}

impl Engine {
    /// A new engine pinning under `pins`; nothing is attached until the first intent arrives.
    /// Spawns the DNS engine.
    pub fn new(pins: PinDir, hierarchy: Hierarchy) -> Self {
        let (dns, dns_changed) = DnsEngine::new(DnsSettings::default());
        tokio::spawn(dns.clone().run());
        Self {
            pins,
            hierarchy,
            attached_to: None,
            maps: None,
            status: StatusHandle {
                shared: Arc::default(),
                dns: dns.clone(),
            },
            dns,
            dns_changed,
            intent: None,
            warned_conflicts: BTreeSet::new(),
        }
    }

    /// A view of the engine's state.
    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    fn update_status(&self, update: impl FnOnce(&mut AgentStatus)) {
        update(&mut self.status.lock().agent);
    }

    /// Takes a source's state: a new intent is put in force; an error is shown and the intent
    /// in force stays.
    pub fn set_source(&mut self, state: &SourceState) {
        let description = state.description.clone();
        let error = state.error.clone();
        self.update_status(|s| {
            s.config_path = description;
            s.config_error = error;
        });
        let Some(intent) = &state.intent else {
            return;
        };
        if self.intent.as_ref() != Some(intent) {
            self.dns.set_settings(dns_settings(&intent.dns));
            let hosts: BTreeSet<String> = intent
                .rules
                .iter()
                .flat_map(|r| r.hosts.iter().cloned())
                .collect();
            self.dns.set_hosts(&hosts);
            self.intent = Some(intent.clone());
            self.update_status(|s| s.config_loaded = true);
        }
    }

    /// Attaches if needed and brings the maps to the intent and the facts.
    pub fn apply(&mut self) {
        let Some(intent) = self.intent.clone() else {
            return;
        };
        if let Err(err) = self.ensure_attached(&intent) {
            error!(
                error = format!("{:#}", anyhow::Error::from(err)),
                "cannot attach; will retry"
            );
            return;
        }
        let resolved = self.dns.routed();
        let desired = compute(&intent.rules, &resolved, &intent.selected, &intent.exempt);
        for conflict in &desired.conflicts {
            if self.warned_conflicts.insert(conflict.clone()) {
                warn!(
                    destination = %conflict.route.dest, port = conflict.route.port, protocol = %conflict.route.protocol,
                    winner = %conflict.winner, loser = %conflict.loser,
                    "two rules claim one destination with different gateways; the first rule wins"
                );
            }
        }
        self.status.lock().conflicts.clone_from(&desired.conflicts);
        let Some(maps) = self.maps.as_mut() else {
            return;
        };
        let reconcile_error = match reconcile(maps, &desired) {
            Ok(changes) => {
                if changes.any() {
                    info!(
                        ?changes,
                        routes = desired.routes.len(),
                        cgroups = desired.cgroups.len(),
                        "maps updated"
                    );
                }
                None
            }
            Err(err) => {
                let message = format!("{:#}", anyhow::Error::from(err));
                error!(error = message, "maps only partly updated");
                Some(message)
            }
        };
        self.update_status(|s| {
            s.attached = true;
            s.routes = desired.routes.len();
            s.cgroups = desired.cgroups.len();
            s.missing_cgroups.clone_from(&intent.missing);
            s.reconcile_error = reconcile_error;
            s.conflicts = desired
                .conflicts
                .iter()
                .map(|c| ConflictStatus {
                    destination: c.route.dest,
                    port: c.route.port,
                    protocol: c.route.protocol,
                    winner: c.winner.to_string(),
                    loser: c.loser.to_string(),
                })
                .collect();
        });
    }

    fn ensure_attached(&mut self, intent: &Intent) -> Result<(), EngineError> {
        let target = match &intent.attach {
            Some(path) => self
                .hierarchy
                .resolve(path)
                .map_err(EngineError::AttachPath)?,
            None => self.hierarchy.mount().to_owned(),
        };
        if self.attached_to.as_deref() != Some(target.as_path()) || self.maps.is_none() {
            datapath::attach(&self.pins, &target)?;
            self.maps = Some(Maps::open(&self.pins)?);
            self.attached_to = Some(target);
        }
        Ok(())
    }

    /// Logs the counters and that the pinned state stays in place.
    pub fn log_shutdown(&self) {
        let counters = self
            .maps
            .as_ref()
            .and_then(|maps| maps.stats().ok())
            .unwrap_or_default();
        let counters: Vec<String> = counters
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        info!(
            counters = counters.join(" "),
            "stopping; pinned programs and maps stay in place and keep redirecting (`egress-agent uninstall` removes them)"
        );
    }
}

/// Resolver settings from the intent; no servers: /etc/resolv.conf.
fn dns_settings(dns: &DnsIntent) -> DnsSettings {
    let mut servers = dns.servers.clone();
    if servers.is_empty() {
        servers = std::fs::read_to_string("/etc/resolv.conf")
            .map(|text| parse_resolv_conf(&text))
            .unwrap_or_default();
        if servers.is_empty() {
            warn!("no DNS servers given and none in /etc/resolv.conf; using 127.0.0.1:53");
            servers.push(std::net::SocketAddr::from(([127, 0, 0, 1], 53)));
        }
    }
    DnsSettings {
        servers,
        timing: Timing {
            grace: dns.grace,
            min_ttl: dns.min_ttl,
            max_ttl: dns.max_ttl,
        },
        timeout: dns.timeout,
        ..DnsSettings::default()
    }
}
