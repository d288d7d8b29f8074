//! The Kubernetes source: watches feed the index, the index yields the cluster state, and the
//! state, with the cgroup ids of this node's selected and exempt pods, is the [`Intent`] the
//! engine puts in force. Policy outcomes and the engine's runtime facts go back to the API as
//! Events and status.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio::sync::{mpsc, watch};

use super::{
    cgroups,
    index::{ClusterState, Index},
    report::PolicyReporter,
    watch::{self as watches, Applier, Change},
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
    pub kubeconfig: Option<std::path::PathBuf>,
    /// DNS servers for hostnames; empty: the agent's /etc/resolv.conf.
    pub dns_servers: Vec<SocketAddr>,
    /// How often the intent is rebuilt and runtime facts are reported.
    pub resync_interval: Duration,
}

/// The Kubernetes source, started.
pub struct KubernetesSource {
    settings: Settings,
    hierarchy: Hierarchy,
    api_changes: mpsc::UnboundedReceiver<Change>,
    cgroup_events: mpsc::UnboundedReceiver<String>,
    index: Index,
    applier: Applier,
    reporter: PolicyReporter,
    state: watch::Sender<SourceState>,
}

impl KubernetesSource {
    /// Connects to the API, starts the watches and the pod cgroup watch; returns the source and
    /// the receiver the engine follows.
    pub async fn start(
        settings: Settings,
        hierarchy: Hierarchy,
    ) -> anyhow::Result<(Self, watch::Receiver<SourceState>)> {
        let client = client(settings.kubeconfig.as_deref()).await?;
        let api_changes = watches::start(&client, &settings.node);
        let cgroup_events =
            cgroups::watch(hierarchy.mount().to_owned()).context("watching pod cgroups")?;
        let reporter = PolicyReporter::new(client.clone(), &settings.node);
        let (state, receiver) = watch::channel(SourceState {
            description: format!("kubernetes (node {})", settings.node),
            ..SourceState::default()
        });
        let source = Self {
            settings,
            hierarchy,
            api_changes,
            cgroup_events,
            index: Index::default(),
            applier: Applier::default(),
            reporter,
            state,
        };
        Ok((source, receiver))
    }

    /// Runs until the engine goes away. `engine` reports the runtime facts to publish.
    pub async fn run(mut self, engine: StatusHandle) {
        let mut resync = tokio::time::interval(self.settings.resync_interval);
        resync.tick().await;
        loop {
            tokio::select! {
                Some(change) = self.api_changes.recv() => {
                    let mut changed = self.applier.apply(&mut self.index, change);
                    // Take everything already queued before recomputing.
                    while let Ok(change) = self.api_changes.try_recv() {
                        changed |= self.applier.apply(&mut self.index, change);
                    }
                    if changed && self.applier.all_synced() {
                        let state = self.publish();
                        self.reporter.report(&self.index, &state);
                    }
                }
                Some(_uid) = self.cgroup_events.recv() => {
                    while self.cgroup_events.try_recv().is_ok() {}
                    if self.applier.all_synced() {
                        self.publish();
                    }
                }
                _ = resync.tick() => {
                    if self.applier.all_synced() {
                        let state = self.publish();
                        self.reporter.report_runtime(&engine.facts(), &state);
                    }
                }
                () = self.state.closed() => return,
            }
        }
    }

    /// Recomputes the cluster state and publishes its intent; returns the state.
    fn publish(&mut self) -> ClusterState {
        let state = self.index.compute();
        let intent = intent(&state, &self.hierarchy, &self.settings.dns_servers);
        self.state.send_if_modified(|current| {
            let changed = current.intent.as_ref() != Some(&intent);
            current.intent = Some(intent);
            changed
        });
        state
    }
}

async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
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

/// The intent for a cluster state: attach at the cgroup2 root, the policies' rules, and the
/// cgroups of the selected and exempt pods that exist on this node.
pub fn intent(state: &ClusterState, hierarchy: &Hierarchy, dns_servers: &[SocketAddr]) -> Intent {
    let root = hierarchy.mount();
    let mut missing = Vec::new();
    let mut id_of = |pod: &super::index::PodRef| {
        let id = cgroups::find_pod_cgroup(root, pod).and_then(|path| hierarchy.id_of(&path).ok());
        if id.is_none() {
            missing.push(format!("pod {}", pod.uid));
        }
        id
    };
    let selected = state
        .selected
        .iter()
        .filter_map(|(pod, rules)| {
            Some(Selection {
                cgroup: id_of(pod)?,
                rules: rules.clone(),
            })
        })
        .collect();
    let exempt = state.exempt.iter().filter_map(&mut id_of).collect();
    Intent {
        attach: None,
        rules: state.rules.clone(),
        selected,
        exempt,
        dns: DnsIntent {
            servers: dns_servers.to_vec(),
            ..DnsIntent::default()
        },
        missing,
    }
}
