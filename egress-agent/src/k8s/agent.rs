//! Kubernetes mode: watches feed the index, the index yields a `Config` (rules, selected and
//! exempt pod cgroups), and the same agent as in standalone mode resolves, reconciles and
//! serves `/status` and `/ready`.

use std::time::Duration;

use anyhow::Context as _;
use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio::signal::unix::{SignalKind, signal};

use super::{
    cgroups,
    index::{ClusterState, Index},
    report::PolicyReporter,
    watch::{self, Applier},
};
use crate::{
    cgroupfs::Hierarchy,
    cli::RunArgs,
    config::{CgroupSet, Config, Rules},
    run::{Agent, hierarchy},
};

/// Runs until SIGTERM or SIGINT.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let node = args
        .node_name
        .clone()
        .context("Kubernetes mode needs --node-name (or NODE_NAME from the downward API); standalone mode needs --config")?;
    let client = client(&args).await?;
    let hierarchy = hierarchy(&args)?;
    let (mut agent, mut dns_changed) = Agent::new(
        &args,
        hierarchy.clone(),
        format!("kubernetes (node {node})"),
    )
    .await?;
    let mut api_changes = watch::start(&client, &node);
    let mut cgroup_events =
        cgroups::watch(hierarchy.mount().to_owned()).context("watching pod cgroups")?;
    let mut reporter = PolicyReporter::new(client.clone(), &node);
    let mut index = Index::default();
    let mut applier = Applier::default();
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut resync = tokio::time::interval(args.resync_interval);
    resync.tick().await;
    loop {
        tokio::select! {
            Some(change) = api_changes.recv() => {
                let mut index_changed = applier.apply(&mut index, change);
                // Take everything already queued before recomputing.
                while let Ok(change) = api_changes.try_recv() {
                    index_changed |= applier.apply(&mut index, change);
                }
                if index_changed && applier.all_synced() {
                    let state = refresh(&mut agent, &index, &hierarchy, &args);
                    reporter.report(&index, &state);
                }
            }
            Some(_uid) = cgroup_events.recv() => {
                while cgroup_events.try_recv().is_ok() {}
                if applier.all_synced() {
                    refresh(&mut agent, &index, &hierarchy, &args);
                }
            }
            Ok(()) = dns_changed.changed() => agent.apply(),
            _ = resync.tick() => {
                if applier.all_synced() {
                    let state = refresh(&mut agent, &index, &hierarchy, &args);
                    let (conflicts, hosts) = agent.runtime_facts();
                    reporter.report_runtime(&conflicts, &hosts, &state);
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    agent.log_shutdown();
    Ok(())
}

/// Recomputes the cluster state and puts the matching config in force; returns the state.
fn refresh(
    agent: &mut Agent,
    index: &Index,
    hierarchy: &Hierarchy,
    args: &RunArgs,
) -> ClusterState {
    let state = index.compute();
    agent.apply_config(desired_config(&state, hierarchy, &args.dns_servers));
    state
}

async fn client(args: &RunArgs) -> anyhow::Result<Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no in-cluster config or kubeconfig")?,
    };
    let mut config = config;
    config.read_timeout = Some(Duration::from_secs(295));
    Client::try_from(config).context("building the Kubernetes client")
}

/// The agent's config for a cluster state: attach at the cgroup2 root, the policies' rules, and
/// the cgroups of the selected and exempt pods that exist on this node.
pub fn desired_config(
    state: &ClusterState,
    hierarchy: &Hierarchy,
    dns_servers: &[std::net::SocketAddr],
) -> Config {
    let root = hierarchy.mount();
    let (selected, groups): (Vec<_>, Vec<_>) = state
        .selected
        .iter()
        .filter_map(|(pod, groups)| Some((cgroups::find_pod_cgroup(root, pod)?, *groups)))
        .unzip();
    let exempt = state
        .exempt
        .iter()
        .filter_map(|pod| cgroups::find_pod_cgroup(root, pod))
        .collect();
    Config {
        attach: None,
        dns: crate::config::DnsConfig {
            servers: dns_servers.to_vec(),
            ..crate::config::DnsConfig::default()
        },
        rules: Rules(state.rules.clone()),
        workloads: CgroupSet {
            cgroups: selected,
            groups,
        },
        exempt: CgroupSet {
            cgroups: exempt,
            groups: Vec::new(),
        },
    }
}
