//! `egress-agent run`: the standalone agent loop.
//!
//! Attach once, then keep the maps equal to the config and the DNS answers: on start, on
//! SIGHUP, when the file changes, when a hostname's routed addresses change, and on every
//! resync (which finds cgroups created since). An invalid file is reported (log and
//! `/status`) and changes nothing. SIGTERM/SIGINT exit and leave the pinned programs and maps
//! working.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::PoisonError,
    time::Duration,
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::{
    admin::{self, AgentStatus, ConflictStatus, SharedStatus},
    bpffs::PinDir,
    cgroupfs::Hierarchy,
    cli::RunArgs,
    config::{Config, DnsConfig},
    datapath::{self, Maps},
    desired,
    dns::{DnsEngine, DnsSettings, parse_resolv_conf, state::Timing},
    reconcile,
};

/// How often the config file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

pub(crate) struct Agent {
    pins: PinDir,
    hierarchy: Hierarchy,
    config_path: PathBuf,
    /// The file's contents when it was last read, to notice changes.
    last_text: Option<String>,
    /// The config in force (the last valid one).
    config: Option<Config>,
    attached_to: Option<PathBuf>,
    maps: Option<Maps>,
    dns: DnsEngine,
    status: SharedStatus,
    missing_cgroups: BTreeSet<PathBuf>,
    /// Conflicts already warned about, so each is logged once.
    warned_conflicts: BTreeSet<String>,
}

/// Runs the agent until SIGTERM or SIGINT: from the config file when `--config` is given, else
/// from the Kubernetes API.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    match args.config.clone() {
        Some(config) => run_file(args, config).await,
        None => crate::k8s::agent::run(args).await,
    }
}

/// The cgroup2 hierarchy: `--cgroup-root`, else the first cgroup2 mount.
pub(crate) fn hierarchy(args: &RunArgs) -> anyhow::Result<Hierarchy> {
    match &args.cgroup_root {
        Some(root) => Ok(Hierarchy::new(root.clone())),
        None => Hierarchy::discover().context("finding the cgroup2 hierarchy"),
    }
}

impl Agent {
    /// A new agent; nothing is attached until the first config is applied.
    pub(crate) async fn new(
        args: &RunArgs,
        hierarchy: Hierarchy,
        source: String,
    ) -> anyhow::Result<(Self, tokio::sync::watch::Receiver<u64>)> {
        info!(cgroup2 = %hierarchy.mount().display(), bpffs_dir = %args.pins.bpffs_dir.display(), source, "starting");
        let (dns, dns_changed) = DnsEngine::new(DnsSettings::default());
        tokio::spawn(dns.clone().run());
        let status = SharedStatus::default();
        status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .config_path
            .clone_from(&source);
        if args.admin_addr != "off" {
            let addr: SocketAddr = args.admin_addr.parse().context("--admin-addr")?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the admin endpoint {addr}"))?;
            tokio::spawn(admin::serve(listener, status.clone(), dns.clone()));
        }
        let agent = Self {
            pins: PinDir::new(args.pins.bpffs_dir.clone()),
            hierarchy,
            config_path: PathBuf::from(source),
            last_text: None,
            config: None,
            attached_to: None,
            maps: None,
            dns,
            status,
            missing_cgroups: BTreeSet::new(),
            warned_conflicts: BTreeSet::new(),
        };
        Ok((agent, dns_changed))
    }

    /// Destinations two rules claim (from the last reconcile) and every hostname's state.
    pub(crate) fn runtime_facts(&self) -> (Vec<ConflictStatus>, Vec<crate::dns::HostStatus>) {
        let conflicts = self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .conflicts
            .clone();
        (conflicts, self.dns.status())
    }

    /// Logs the counters and that the pinned state stays in place.
    pub(crate) fn log_shutdown(&self) {
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

    /// Puts `config` in force (a no-op when it is already) and reconciles.
    pub(crate) fn apply_config(&mut self, config: Config) {
        if self.config.as_ref() != Some(&config) {
            self.dns.set_settings(dns_settings(&config.dns));
            let hosts: BTreeSet<String> = config
                .rules
                .0
                .iter()
                .flat_map(|r| r.hosts.iter().cloned())
                .collect();
            self.dns.set_hosts(&hosts);
            self.config = Some(config);
            self.update_status(|s| {
                s.config_loaded = true;
                s.config_error = None;
            });
        }
        self.apply();
    }
}

/// Standalone mode: the config file.
async fn run_file(args: RunArgs, config_path: PathBuf) -> anyhow::Result<()> {
    let hierarchy = hierarchy(&args)?;
    let (mut agent, mut dns_changed) =
        Agent::new(&args, hierarchy, config_path.display().to_string()).await?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut watch = tokio::time::interval(WATCH_INTERVAL);
    let mut resync = tokio::time::interval(args.resync_interval);
    watch.tick().await;
    resync.tick().await;

    agent.reload(true);
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                info!("SIGHUP: reloading");
                agent.reload(true);
            }
            _ = watch.tick() => agent.reload(false),
            Ok(()) = dns_changed.changed() => agent.apply(),
            _ = resync.tick() => agent.apply(),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    agent.log_shutdown();
    Ok(())
}

impl Agent {
    pub(crate) fn update_status(&self, update: impl FnOnce(&mut AgentStatus)) {
        update(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Reads the file; when it changed (or `force`), validates and applies it.
    fn reload(&mut self, force: bool) {
        let text = match std::fs::read_to_string(&self.config_path) {
            Ok(text) => text,
            Err(err) => {
                if force || self.last_text.is_some() {
                    error!(path = %self.config_path.display(), error = %err, "cannot read config; keeping the current state");
                    self.update_status(|s| {
                        s.config_error =
                            Some(format!("cannot read {}: {err}", self.config_path.display()));
                    });
                }
                self.last_text = None;
                return;
            }
        };
        if !force && self.last_text.as_deref() == Some(text.as_str()) {
            return;
        }
        self.last_text = Some(text.clone());
        match Config::parse(&self.config_path, &text) {
            Ok(config) => {
                info!(path = %self.config_path.display(), rules = config.rules.0.len(), "config loaded");
                audit(&config);
                self.apply_config(config);
            }
            Err(err) => {
                error!(error = %err, "config rejected; keeping the previous state");
                self.update_status(|s| s.config_error = Some(err.to_string()));
            }
        }
    }

    /// Attaches if needed and reconciles the maps with the config and the DNS answers.
    pub(crate) fn apply(&mut self) {
        let Some(config) = self.config.clone() else {
            return;
        };
        if let Err(err) = self.ensure_attached(&config) {
            error!(error = format!("{err:#}"), "cannot attach; will retry");
            return;
        }
        let resolved = self.dns.routed();
        let all = egress_common::CgroupMode::ALL_GROUPS;
        let selected: Vec<(u64, u32)> = self
            .cgroup_ids(&config.workloads.cgroups)
            .into_iter()
            .map(|(index, id)| {
                (
                    id,
                    config.workloads.groups.get(index).copied().unwrap_or(all),
                )
            })
            .collect();
        let exempt: Vec<u64> = self
            .cgroup_ids(&config.exempt.cgroups)
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let desired = desired::compute(&config.rules.0, &resolved, &selected, &exempt);
        for conflict in &desired.conflicts {
            let key = format!("{conflict:?}");
            if self.warned_conflicts.insert(key) {
                warn!(
                    destination = %conflict.route.dest, port = conflict.route.port, protocol = %conflict.route.protocol,
                    winner = conflict.winner, loser = conflict.loser,
                    "two rules claim one destination with different gateways; the first rule wins"
                );
            }
        }
        let Some(maps) = self.maps.as_mut() else {
            return;
        };
        let result = reconcile::reconcile(maps, &desired);
        let reconcile_error = match result {
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
        let missing: Vec<String> = self
            .missing_cgroups
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        self.update_status(|s| {
            s.attached = true;
            s.routes = desired.routes.len();
            s.cgroups = desired.cgroups.len();
            s.missing_cgroups = missing;
            s.reconcile_error = reconcile_error;
            s.conflicts = desired
                .conflicts
                .iter()
                .map(|c| ConflictStatus {
                    destination: c.route.dest.to_string(),
                    port: c.route.port,
                    protocol: c.route.protocol.to_string(),
                    winner: c.winner.clone(),
                    loser: c.loser.clone(),
                })
                .collect();
        });
    }

    fn ensure_attached(&mut self, config: &Config) -> anyhow::Result<()> {
        let target = match &config.attach {
            Some(path) => self.hierarchy.resolve(path)?,
            None => self.hierarchy.mount().to_owned(),
        };
        if self.attached_to.as_deref() != Some(target.as_path()) || self.maps.is_none() {
            datapath::attach(&self.pins, &target)
                .with_context(|| format!("attaching at {}", target.display()))?;
            self.maps = Some(Maps::open(&self.pins)?);
            self.attached_to = Some(target);
        }
        Ok(())
    }

    /// (position, cgroup id) of the configured paths that exist; missing ones are reported once
    /// until they appear.
    fn cgroup_ids(&mut self, paths: &[PathBuf]) -> Vec<(usize, u64)> {
        let mut ids = Vec::new();
        for (index, path) in paths.iter().enumerate() {
            match self.hierarchy.id_of(path) {
                Ok(id) => {
                    if self.missing_cgroups.remove(path) {
                        info!(cgroup = %path.display(), "cgroup appeared");
                    }
                    ids.push((index, id));
                }
                Err(err) => {
                    if self.missing_cgroups.insert(path.clone()) {
                        warn!(error = %err, "cgroup not found; will look again on every resync");
                    }
                }
            }
        }
        ids
    }
}

/// Resolver settings from the config; no servers: /etc/resolv.conf.
fn dns_settings(dns: &DnsConfig) -> DnsSettings {
    let mut servers = dns.servers.clone();
    if servers.is_empty() {
        servers = std::fs::read_to_string("/etc/resolv.conf")
            .map(|text| parse_resolv_conf(&text))
            .unwrap_or_default();
        if servers.is_empty() {
            warn!("no dns.servers and none in /etc/resolv.conf; using 127.0.0.1:53");
            servers.push(SocketAddr::from(([127, 0, 0, 1], 53)));
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
                gateway = rule.gateway.map_or_else(|| "<unknown>".to_owned(), |g| g.to_string()),
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
