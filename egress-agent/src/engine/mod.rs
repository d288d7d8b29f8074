//! The engine: one for every mode. It takes the source's [`Intent`], keeps the DNS engine
//! resolving the intent's exact hostnames, computes the desired map contents from the intent
//! and the facts learned at runtime, and writes them by diff. The first time (and whenever the
//! attach point changes) it loads the programs, fills the maps, and only then attaches.
//!
//! ```text
//! source ─► Intent ─┐
//!                   ├─► desired::compute ─► Desired ─► reconcile (diff) ─► maps
//! facts ────────────┘      (pure)
//!   DnsEngine: resolved addresses (persisted in RESOLVED, so a restart starts from them)
//!   kernel: learned addresses (LEARNED; the engine only expires them)
//! ```

mod desired;
mod ids;
mod learned;
mod persist;
mod reconcile;
mod run;
mod sets;
mod write;

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::watch;
use tracing::{error, info, warn};

pub use desired::Conflict;
pub use ids::Exhausted;
pub use reconcile::ReconcileError;
pub use run::{SourceState, run};

use self::{
    desired::{Facts as DesiredFacts, IdSpace, compute},
    reconcile::{Installed, reconcile},
};
use crate::{
    bpffs::PinDir,
    cgroupfs::Hierarchy,
    clock,
    datapath::{self, DatapathError, Maps},
    dns::{DnsEngine, DnsSettings, HostStatus, parse_resolv_conf, state::Timing},
    health::Health,
    intent::{DnsIntent, Intent},
    route::Source,
    status::{AgentStatus, ConflictStatus, LearnedStatus, StatusDocument},
};

/// Errors putting an intent in force.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The attach cgroup is not usable.
    #[error("attach cgroup")]
    AttachPath(#[source] crate::cgroupfs::CgroupError),
    /// The datapath could not be loaded, attached or read.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// An id range ran out.
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    /// A map is full: what fit is installed (the rest is retried every resync).
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
}

/// Routes by source and map fill, for the metrics.
#[expect(clippy::cast_precision_loss, reason = "ratios")]
fn record_sizes(desired: &desired::Desired) {
    use egress_common::maps as defs;
    let resolved = desired
        .addresses
        .values()
        .filter(|entry| entry.source == Source::Resolved)
        .count();
    let statics = desired.addresses.len() - resolved + desired.cidrs.len();
    crate::metrics::set_routes(Source::Static, statics);
    crate::metrics::set_routes(Source::Resolved, resolved);
    for (name, used, def) in [
        ("addresses", desired.addresses.len(), defs::ADDRESSES),
        ("cidrs", desired.cidrs.len(), defs::CIDRS),
        ("cgroups", desired.cgroups.len(), defs::CGROUPS),
        ("targets", desired.targets.len(), defs::TARGETS),
    ] {
        crate::metrics::set_map_fill(name, used as f64 / f64::from(def.max_entries));
    }
}

/// What the engine learned at runtime, for sources that report it (Kubernetes Events).
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Destinations two rules of one class claim, from the last reconcile.
    pub conflicts: Vec<Conflict>,
    /// Every hostname's state.
    pub hosts: Vec<HostStatus>,
}

#[derive(Debug, Default)]
struct Shared {
    agent: AgentStatus,
    conflicts: Vec<Conflict>,
    learned: Vec<learned::LearnedGroup>,
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
        let shared = self.lock();
        let now = clock::monotonic_ns();
        StatusDocument {
            agent: shared.agent.clone(),
            hosts: self.dns.status(),
            learned: shared
                .learned
                .iter()
                .map(|group| LearnedStatus {
                    host: group.host.clone(),
                    cgroup: group.cgroup.clone(),
                    addresses: group.addresses,
                    expires_in_secs: clock::secs_until(group.last_expiry_ns, now),
                })
                .collect(),
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

/// The datapath once attached: the open maps, what the agent wrote to them, and the ids.
struct Attached {
    at: PathBuf,
    maps: Maps,
    installed: Installed,
    ids: IdSpace,
    name_seed: u64,
    /// The resolver's answers as last persisted.
    persisted: persist::Persisted,
    /// What the maps were last brought to, when that write succeeded in full.
    written: Option<write::Written>,
}

/// The engine.
pub struct Engine {
    pins: PinDir,
    hierarchy: Hierarchy,
    attached: Option<Attached>,
    dns: DnsEngine,
    dns_changed: watch::Receiver<u64>,
    status: StatusHandle,
    /// The intent in force (the source's last valid one); a new one is a new `Arc`.
    intent: Option<Arc<Intent>>,
    /// The DNS servers in use (the intent's, else resolv.conf's).
    servers: Vec<std::net::SocketAddr>,
    /// Conflicts already warned about, so each is logged once.
    warned_conflicts: BTreeSet<Conflict>,
}

impl Engine {
    /// A new engine pinning under `pins`; nothing is attached until the first intent arrives.
    /// Spawns the DNS engine.
    pub fn new(pins: PinDir, hierarchy: Hierarchy, health: &Health) -> Self {
        let (dns, dns_changed) = DnsEngine::new(DnsSettings::default());
        // The DNS engine wakes at least once a minute.
        tokio::spawn(
            dns.clone()
                .run(health.register("dns", std::time::Duration::from_mins(3))),
        );
        Self {
            pins,
            hierarchy,
            attached: None,
            status: StatusHandle {
                shared: Arc::default(),
                dns: dns.clone(),
            },
            dns,
            dns_changed,
            intent: None,
            servers: Vec::new(),
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
        if self.intent.as_deref() != Some(intent) {
            let settings = dns_settings(&intent.dns);
            self.servers.clone_from(&settings.servers);
            self.dns.set_settings(settings);
            // Wildcards are learned only, never resolved in advance.
            let hosts: BTreeSet<String> = intent
                .rules
                .iter()
                .flat_map(|r| r.hosts.iter())
                .filter(|h| !h.starts_with("*."))
                .cloned()
                .collect();
            self.dns.set_hosts(&hosts);
            self.intent = Some(Arc::new(intent.clone()));
            self.update_status(|s| s.config_loaded = true);
        }
    }

    /// Attaches if needed and brings the maps to the intent and the facts.
    pub fn apply(&mut self) {
        let Some(intent) = self.intent.clone() else {
            return;
        };
        let started = std::time::Instant::now();
        let result = match self.attach_point(&intent) {
            Ok(at) if self.attached.as_ref().is_some_and(|a| a.at == at) => self.write(&intent),
            Ok(at) => self.attach(&intent, at),
            Err(err) => Err(err),
        };
        crate::metrics::reconciled(result.is_ok(), started.elapsed().as_secs_f64());
        let reconcile_error = match result {
            Ok(()) => None,
            Err(err) => {
                let message = format!("{:#}", anyhow::Error::from(err));
                error!(
                    error = message,
                    "cannot bring the datapath to the intent; will retry"
                );
                Some(message)
            }
        };
        let attached = self.attached.is_some();
        self.update_status(|s| {
            s.attached = attached;
            s.missing_cgroups.clone_from(&intent.missing);
            s.reconcile_error = reconcile_error;
        });
    }

    fn attach_point(&self, intent: &Intent) -> Result<PathBuf, EngineError> {
        match &intent.attach {
            Some(path) => self
                .hierarchy
                .resolve(path)
                .map_err(EngineError::AttachPath),
            None => Ok(self.hierarchy.mount().to_owned()),
        }
    }

    /// Loads the programs, fills the maps (after carrying over what the previous run and older
    /// layouts knew), then attaches.
    fn attach(&mut self, intent: &Arc<Intent>, at: PathBuf) -> Result<(), EngineError> {
        let loaded = datapath::load(&self.pins)?;
        let maps = Maps::open(&self.pins)?;
        let installed = Installed::read(&maps)?;
        let mut ids = IdSpace::default();
        // An upgrade from a layout this binary reads: its ids first (this layout's, if any,
        // win), and its resolver's answers.
        if let Some(old) = &datapath::previous_layout(&self.pins) {
            let old_installed = Installed::read(old)?;
            persist::prefer_ids(&old_installed, &mut ids);
            persist::restore(old, &old_installed, &self.dns)?;
        }
        persist::prefer_ids(&installed, &mut ids);
        let name_seed = match installed.config.name_seed {
            0 => random_seed(),
            seed => seed,
        };
        let persisted = persist::restore(&maps, &installed, &self.dns)?;
        for (host, addresses) in datapath::carry_over(&self.pins)? {
            for addr in addresses {
                self.dns.seed(&host, addr, std::time::Instant::now());
            }
        }
        self.attached = Some(Attached {
            at,
            maps,
            installed,
            ids,
            name_seed,
            persisted,
            written: None,
        });
        let attached = self.write(intent).and_then(|()| {
            // What the old programs learned, before the new ones replace them.
            if let Err(err) = datapath::carry_learned(&self.pins) {
                warn!(error = %err, "cannot carry learned addresses over from the previous map layout");
            }
            let at = self
                .attached
                .as_ref()
                .map(|a| a.at.clone())
                .unwrap_or_default();
            loaded.attach(&self.pins, &at).map_err(EngineError::from)
        });
        let attached = attached.and_then(|()| self.check_markers());
        if attached.is_err() {
            // Load and attach again next time (the maps keep what was written).
            self.attached = None;
        }
        attached
    }

    /// Once the programs are attached and the older ones' runs are over: marks what was
    /// learned without a marker (by an agent from before markers), then lets the hooks trust
    /// markers.
    fn check_markers(&mut self) -> Result<(), EngineError> {
        let Some(attached) = self.attached.as_mut() else {
            return Ok(());
        };
        if let Err(err) = datapath::wait_for_programs() {
            // The flag stays set: every selected connect looks up its scope, as before markers.
            warn!(error = %err, "cannot wait for running programs; learned-address markers unused");
            return Ok(());
        }
        learned::check_markers(&mut attached.maps, &mut attached.installed)?;
        Ok(())
    }

    /// Removes learned addresses that expired, whose scope is no longer selected, or whose
    /// pattern is no longer configured. Returns how many went.
    pub fn expire_learned(&mut self) -> usize {
        let Some(attached) = self.attached.as_mut() else {
            return 0;
        };
        match learned::expire(
            &mut attached.maps,
            &mut attached.installed,
            &self.hierarchy,
            clock::monotonic_ns(),
        ) {
            Ok((removed, summary)) => {
                let learned: usize = summary.iter().map(|group| group.addresses).sum();
                crate::metrics::set_routes(Source::Learned, learned);
                #[expect(clippy::cast_precision_loss, reason = "a ratio")]
                crate::metrics::set_map_fill(
                    "learned",
                    learned as f64 / f64::from(egress_common::maps::LEARNED.max_entries),
                );
                self.status.lock().learned = summary;
                removed
            }
            Err(err) => {
                warn!(error = %err, "cannot expire learned addresses");
                0
            }
        }
    }

    /// Logs the counters and that the pinned state stays in place.
    pub fn log_shutdown(&self) {
        let counters = self
            .attached
            .as_ref()
            .and_then(|a| a.maps.stats().ok())
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

/// A random seed for the DNS name hash (once per installation).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher as _, RandomState};
    RandomState::new().hash_one((std::process::id(), clock::monotonic_ns())) | 1
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
