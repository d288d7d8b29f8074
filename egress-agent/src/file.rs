//! The file source (standalone mode): reads the configuration file, validates it, audits it
//! and turns it into an [`Intent`]; reloads on SIGHUP and when the file changes (its metadata,
//! checked every half second, and its contents, compared every resync), and looks the
//! configured cgroups up again on every resync (so cgroups created later are picked up).
//!
//! An invalid file is reported (log and `/status`) and changes nothing: the last valid intent
//! stays in force.

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf, time::Duration};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};
use tracing::{error, info, warn};

use crate::{
    cgroupfs::Hierarchy,
    config::Config,
    engine::SourceState,
    intent::{Intent, RuleIntent, RuleOwner, Selection},
};

/// How often the file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// What `stat` says of the file (through symlinks, so a `ConfigMap`'s swapped link counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        device: meta.dev(),
        inode: meta.ino(),
        size: meta.size(),
        modified: (meta.mtime(), meta.mtime_nsec()),
        changed: (meta.ctime(), meta.ctime_nsec()),
    })
}

/// The file source.
pub struct FileSource {
    path: PathBuf,
    hierarchy: Hierarchy,
    /// The file's contents when it was last read, to notice changes.
    last_text: Option<String>,
    /// The file's identity, size and times when it was last read: while they stay the same,
    /// the half-second check reads nothing (a config of a million addresses is 19 MB).
    last_stamp: Option<Stamp>,
    /// The last valid configuration.
    config: Option<Config>,
    /// Why the file as last read is not in force; kept until a valid one is read, so a resync
    /// does not clear it from `/status`.
    error: Option<String>,
    /// Configured cgroups not found on the last lookup, reported once until they appear.
    missing: BTreeSet<PathBuf>,
    state: watch::Sender<SourceState>,
}

impl FileSource {
    /// A source for the file at `path`, and the receiver the engine follows.
    pub fn new(path: PathBuf, hierarchy: Hierarchy) -> (Self, watch::Receiver<SourceState>) {
        let (state, receiver) = watch::channel(SourceState {
            description: path.display().to_string(),
            ..SourceState::default()
        });
        let source = Self {
            path,
            hierarchy,
            last_text: None,
            last_stamp: None,
            config: None,
            error: None,
            missing: BTreeSet::new(),
            state,
        };
        (source, receiver)
    }

    /// Runs until the engine goes away: reload on SIGHUP or a change of the file, look cgroups
    /// up again every `resync_interval`.
    pub async fn run(
        mut self,
        resync_interval: Duration,
        heartbeat: crate::health::Heartbeat,
    ) -> std::io::Result<()> {
        let mut hangup = signal(SignalKind::hangup())?;
        let mut watch = tokio::time::interval(WATCH_INTERVAL);
        let mut resync = tokio::time::interval(resync_interval);
        watch.tick().await;
        resync.tick().await;
        self.reload(true);
        loop {
            heartbeat.beat();
            tokio::select! {
                _ = hangup.recv() => {
                    info!("SIGHUP: reloading");
                    self.reload(true);
                }
                _ = watch.tick() => {
                    if self.last_stamp.is_none() || stamp(&self.path) != self.last_stamp {
                        self.reload(false);
                    }
                }
                _ = resync.tick() => {
                    // Also read when nothing in the metadata moved: two writes of one size
                    // within a timestamp tick would otherwise go unnoticed.
                    if !self.reload(false) {
                        self.publish(self.error.clone());
                    }
                }
                () = self.state.closed() => return Ok(()),
            }
        }
    }

    /// Reads the file; when it changed (or `force`), validates and applies it. Returns whether
    /// it published.
    fn reload(&mut self, force: bool) -> bool {
        self.last_stamp = stamp(&self.path);
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) => {
                let report = force || self.last_text.is_some();
                if report {
                    error!(path = %self.path.display(), error = %err, "cannot read config; keeping the current state");
                    self.publish(Some(format!("cannot read {}: {err}", self.path.display())));
                }
                self.last_text = None;
                return report;
            }
        };
        if !force && self.last_text.as_deref() == Some(text.as_str()) {
            return false;
        }
        self.last_text = Some(text.clone());
        match Config::parse(&self.path, &text)
            .map_err(|err| err.to_string())
            .and_then(|config| {
                self.check_depth(&config)?;
                Ok(config)
            }) {
            Ok(config) => {
                info!(path = %self.path.display(), rules = config.rules.0.len(), "config loaded");
                audit(&config);
                self.config = Some(config);
                self.publish(None);
            }
            Err(err) => {
                error!(error = %err, "config rejected; keeping the previous state");
                self.publish(Some(err));
            }
        }
        true
    }

    /// Publishes the intent of the last valid configuration (its cgroups looked up now) and
    /// `error`, which stays the source's error until the next publish; the engine hears of it
    /// only when something changed.
    fn publish(&mut self, error: Option<String>) {
        self.error.clone_from(&error);
        let intent = self.config.clone().map(|config| self.intent(&config));
        self.state.send_if_modified(|state| {
            let changed = state.intent != intent || state.error != error;
            state.intent = intent;
            state.error = error;
            changed
        });
    }

    /// Refuses cgroups deeper than the selection walk reaches: their entries would never be
    /// consulted.
    fn check_depth(&self, config: &Config) -> Result<(), String> {
        let limit = egress_common::limits::MAX_CGROUP_DEPTH as usize;
        let paths = config
            .workloads
            .cgroups
            .iter()
            .map(|p| ("workloads", p))
            .chain(config.exempt.cgroups.iter().map(|p| ("exempt", p)));
        for (section, path) in paths {
            if let Ok(depth) = self.hierarchy.depth(path)
                && depth >= limit
            {
                return Err(format!(
                    "{section}.cgroups: {} is at level {depth}, deeper than the {limit} levels the selection walk examines",
                    path.display()
                ));
            }
        }
        Ok(())
    }

    fn intent(&mut self, config: &Config) -> Intent {
        let rules: Vec<RuleIntent> = config
            .rules
            .0
            .iter()
            .map(|rule| RuleIntent {
                owner: RuleOwner::File(rule.name.clone()),
                gateways: rule.gateways,
                hosts: rule.hosts.clone(),
                addresses: rule.addresses.clone(),
                fail_closed: rule.fail_closed,
                refuse_quic: rule.refuse_quic,
                ports: rule.ports.clone(),
            })
            .collect();
        let every_rule: BTreeSet<usize> = (0..rules.len()).collect();
        let selected = self
            .cgroup_ids(&config.workloads.cgroups)
            .into_iter()
            .map(|cgroup| Selection {
                cgroup,
                rules: every_rule.clone(),
            })
            .collect();
        let exempt = self.cgroup_ids(&config.exempt.cgroups);
        Intent {
            attach: config.attach.clone(),
            rules,
            selected,
            exempt,
            dns: (&config.dns).into(),
            missing: self
                .missing
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        }
    }

    /// The ids of the configured cgroups that exist; missing ones are logged once until they
    /// appear.
    fn cgroup_ids(&mut self, paths: &[PathBuf]) -> Vec<u64> {
        let mut ids = Vec::new();
        for path in paths {
            match self.hierarchy.id_of(path) {
                Ok(id) => {
                    if self.missing.remove(path) {
                        info!(cgroup = %path.display(), "cgroup appeared");
                    }
                    ids.push(id);
                }
                Err(err) => {
                    if self.missing.insert(path.clone()) {
                        warn!(error = %err, "cgroup not found; will look again on every resync");
                    }
                }
            }
        }
        ids
    }
}

/// Logs, once per config load, every rule that captures public destinations: taking over a
/// public IP is deliberate, so it is on the record.
fn audit(config: &Config) {
    for rule in &config.rules.0 {
        let public: Vec<String> = rule
            .addresses
            .iter()
            .filter(|net| is_public(net.addr()))
            .map(ToString::to_string)
            .collect();
        if !public.is_empty() || !rule.hosts.is_empty() {
            info!(
                rule = rule.name,
                gateway = %rule.gateways,
                hosts = ?rule.hosts,
                public_addresses = ?public,
                fail_closed = rule.fail_closed,
                "rule redirects public destinations"
            );
        }
    }
}

fn is_public(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_documentation())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unique_local()
                || v6.is_unicast_link_local())
        }
    }
}
