//! The Kubernetes source: watches feed the index, the index yields the cluster state, and the
//! state, with the cgroups of this node's selected and exempt pods, is the [`Intent`] the
//! engine puts in force. The holder of the status Lease reports policy outcomes and the
//! engine's runtime facts as status and Events; every node reports its own pods' missing
//! cgroups.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio::sync::{mpsc, watch};

use super::{
    apply::Applier,
    cgroups::{self, PodCgroups},
    index::{ClusterState, Index, IndexSettings, PodRef},
    lease,
    model::ObjectKey,
    refs::ReferenceWatches,
    report::PolicyReporter,
    watch::{self as watches, Change, Lists},
};
use crate::{
    cgroupfs::Hierarchy,
    engine::{SourceState, StatusHandle},
    intent::{DnsIntent, Intent, Selection},
};

/// Settings of the Kubernetes source.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This node's name.
    pub node: String,
    /// A kubeconfig file; `None`: in-cluster config (or `$KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    /// DNS servers for hostnames; empty: the agent's /etc/resolv.conf.
    pub dns_servers: Vec<SocketAddr>,
    /// How often the intent is rebuilt and runtime facts are reported.
    pub resync_interval: Duration,
    /// Namespaces whose policies may select pods in other namespaces.
    pub trusted_namespaces: BTreeSet<String>,
    /// The cluster DNS Service, whose answers to pods are learned.
    pub cluster_dns: Option<ObjectKey>,
    /// Node-local DNS cache addresses, also trusted.
    pub node_local_dns: Vec<IpAddr>,
    /// The namespace of the status Lease (the agent's own).
    pub lease_namespace: String,
    /// Where the kubelet puts pod cgroups, relative to the cgroup2 mount; empty: anywhere.
    pub kubelet_cgroup_roots: Vec<PathBuf>,
    /// How watches list.
    pub lists: Lists,
}

/// The Kubernetes source, started.
pub struct KubernetesSource {
    settings: Settings,
    api_changes: mpsc::UnboundedReceiver<Change>,
    cgroup_events: mpsc::UnboundedReceiver<PodCgroups>,
    cgroup_roots: Vec<PathBuf>,
    pod_cgroups: PodCgroups,
    index: Index,
    /// The state computed from the index since its last change; a new pod cgroup reuses it.
    computed: Option<Arc<ClusterState>>,
    applier: Applier,
    references: ReferenceWatches,
    reporter: PolicyReporter,
    writer: watch::Receiver<bool>,
    missing_since: BTreeMap<PodRef, (String, Instant)>,
    state: watch::Sender<SourceState>,
}

impl KubernetesSource {
    /// Connects to the API, starts the watches, the status Lease and the pod cgroup watch;
    /// returns the source and the receiver the engine follows.
    pub async fn start(
        settings: Settings,
        hierarchy: Hierarchy,
        health: &crate::health::Health,
    ) -> anyhow::Result<(Self, watch::Receiver<SourceState>)> {
        let client = client(settings.kubeconfig.as_deref()).await?;
        let (tx, api_changes) = mpsc::unbounded_channel();
        let mut applier = Applier::default();
        for scope in watches::start(&client, &settings.node, settings.lists, &tx) {
            applier.expect(scope);
        }
        let cgroup_roots: Vec<PathBuf> = if settings.kubelet_cgroup_roots.is_empty() {
            vec![hierarchy.mount().to_owned()]
        } else {
            settings
                .kubelet_cgroup_roots
                .iter()
                .map(|root| hierarchy.mount().join(root))
                .collect()
        };
        let pod_cgroups = PodCgroups::scan(&cgroup_roots);
        // The watch thread blocks until something changes: only its ending is a problem.
        let watcher_alive = health.register("cgroup-watch", Duration::MAX);
        let cgroup_events = cgroups::watch(&pod_cgroups, cgroup_roots.clone(), watcher_alive)
            .context("watching pod cgroups")?;
        let writer = lease::elect(
            client.clone(),
            &settings.lease_namespace,
            settings.node.clone(),
        );
        let index = Index {
            settings: IndexSettings {
                trusted_namespaces: settings.trusted_namespaces.clone(),
                cluster_dns: settings.cluster_dns.clone(),
            },
            ..Index::default()
        };
        let (state, receiver) = watch::channel(SourceState {
            description: format!("kubernetes (node {})", settings.node),
            ..SourceState::default()
        });
        let source = Self {
            reporter: PolicyReporter::new(client.clone(), &settings.node),
            references: ReferenceWatches::new(client, settings.lists, tx),
            settings,
            api_changes,
            cgroup_events,
            cgroup_roots,
            pod_cgroups,
            index,
            computed: None,
            applier,
            writer,
            missing_since: BTreeMap::new(),
            state,
        };
        Ok((source, receiver))
    }

    /// Runs until the engine goes away. `engine` reports the runtime facts to publish.
    pub async fn run(mut self, engine: StatusHandle, heartbeat: crate::health::Heartbeat) {
        let mut resync = tokio::time::interval(self.settings.resync_interval);
        resync.tick().await;
        loop {
            heartbeat.beat();
            tokio::select! {
                Some(change) = self.api_changes.recv() => {
                    let mut changed = self.applier.apply(&mut self.index, change);
                    // Take everything already queued before recomputing.
                    while let Ok(change) = self.api_changes.try_recv() {
                        changed |= self.applier.apply(&mut self.index, change);
                    }
                    if changed {
                        self.computed = None;
                        let refs = self.index.references();
                        self.references.sync(&refs, &mut self.applier, &mut self.index);
                    }
                    if changed && self.applier.all_synced() {
                        let state = self.cluster_state();
                        self.publish(&state);
                        self.report(&state, &engine);
                    }
                }
                Some(mut found) = self.cgroup_events.recv() => {
                    while let Ok(newer) = self.cgroup_events.try_recv() {
                        found = newer;
                    }
                    self.pod_cgroups = found;
                    if self.applier.all_synced() {
                        let state = self.cluster_state();
                        self.publish(&state);
                    }
                }
                Ok(()) = self.writer.changed() => {
                    if self.applier.all_synced() {
                        let state = self.cluster_state();
                        self.report(&state, &engine);
                    }
                }
                _ = resync.tick() => {
                    if self.applier.all_synced() {
                        self.pod_cgroups = PodCgroups::scan(&self.cgroup_roots);
                        self.computed = None;
                        let state = self.cluster_state();
                        self.publish(&state);
                        self.report(&state, &engine);
                    }
                }
                () = self.state.closed() => return,
            }
        }
    }

    /// Status and policy Events when this agent is the status writer; this node's missing pod
    /// cgroups always.
    fn report(&self, state: &ClusterState, engine: &StatusHandle) {
        if *self.writer.borrow() {
            self.reporter.report(&self.index, state, &engine.facts());
        }
        // The API usually shows a pod before the kubelet creates its cgroup: report only
        // those missing for three resyncs.
        let grace = self.settings.resync_interval * 3;
        let overdue: Vec<(PodRef, String)> = self
            .missing_since
            .iter()
            .filter(|(_, (_, since))| since.elapsed() >= grace)
            .map(|(pod, (uid, _))| (pod.clone(), uid.clone()))
            .collect();
        self.reporter.report_missing_cgroups(&overdue);
    }

    /// The cluster state of the index as it is: computed once per change of the index.
    fn cluster_state(&mut self) -> Arc<ClusterState> {
        if let Some(state) = &self.computed {
            return Arc::clone(state);
        }
        let state = Arc::new(self.index.compute());
        self.index.remember(&state);
        self.computed = Some(Arc::clone(&state));
        state
    }

    /// Publishes the intent of `state` with the pod cgroups found.
    fn publish(&mut self, state: &ClusterState) {
        let (intent, missing) = intent(state, &self.index, &self.pod_cgroups, &self.settings);
        let now = Instant::now();
        let mut since = std::mem::take(&mut self.missing_since);
        self.missing_since = missing
            .into_iter()
            .map(|(pod, uid)| {
                let first = since.remove(&pod).map_or(now, |(_, at)| at);
                (pod, (uid, first))
            })
            .collect();
        crate::metrics::set_cgroups_missing(self.missing_since.len());
        self.state.send_if_modified(|current| {
            let changed = current.intent.as_ref() != Some(&intent);
            current.intent = Some(intent);
            changed
        });
    }
}

/// A client from a kubeconfig file, else the in-cluster config (or `$KUBECONFIG`).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no in-cluster config or kubeconfig")?,
    };
    config.read_timeout = Some(Duration::from_secs(295));
    Client::try_from(config).context("building the Kubernetes client")
}

/// The intent for a cluster state: attach at the cgroup2 root, the policies' rules, the
/// cgroups of the selected and exempt pods found on this node, and the trusted resolvers.
/// Also returns the selected pods whose cgroup was not found (with their API UIDs).
pub fn intent(
    state: &ClusterState,
    index: &Index,
    cgroups: &PodCgroups,
    settings: &Settings,
) -> (Intent, Vec<(PodRef, String)>) {
    let ids_of = |pod: &PodRef| -> Vec<u64> {
        let containers = index
            .pods
            .get(&pod.key)
            .map(|p| p.container_ids.clone())
            .unwrap_or_default();
        cgroups.ids_of(&pod.uid, &containers)
    };
    let mut missing = Vec::new();
    let mut selected = Vec::new();
    for (pod, rules) in &state.selected {
        let ids = ids_of(pod);
        if ids.is_empty() {
            let api_uid = index
                .pods
                .get(&pod.key)
                .map(|p| p.uid.clone())
                .unwrap_or_default();
            missing.push((pod.clone(), api_uid));
        }
        selected.extend(ids.into_iter().map(|cgroup| Selection {
            cgroup,
            rules: rules.clone(),
        }));
    }
    let exempt = state.exempt.iter().flat_map(ids_of).collect();
    let trusted = state
        .trusted_resolvers
        .iter()
        .copied()
        .chain(
            settings
                .node_local_dns
                .iter()
                .map(|ip| SocketAddr::new(*ip, 53)),
        )
        .collect();
    let intent = Intent {
        attach: None,
        rules: state.rules.clone(),
        selected,
        exempt,
        dns: DnsIntent {
            servers: settings.dns_servers.clone(),
            trusted,
            ..DnsIntent::default()
        },
        missing: missing
            .iter()
            .map(|(pod, _)| format!("pod {}/{} (uid {})", pod.key.0, pod.key.1, pod.uid))
            .collect(),
    };
    (intent, missing)
}
