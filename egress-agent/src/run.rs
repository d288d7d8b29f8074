//! `egress-agent run`: wires a source to the engine and serves the admin endpoint.
//!
//! ```text
//! file source (--config) ─┐
//!                         ├─ SourceState ─► engine::run ─► maps
//! Kubernetes source ──────┘                     │
//!                                               ├─► admin endpoint (/status, /live, /ready, /metrics)
//!                                               └─► metrics endpoint (/metrics, /live, /ready)
//! ```

use std::time::Duration;

use anyhow::Context as _;
use tracing::info;

use crate::{
    admin::{self, Endpoint},
    bpffs::PinDir,
    cgroupfs::Hierarchy,
    cli::{Listen, RunArgs},
    engine::{self, Engine},
    file::FileSource,
    health::Health,
    k8s::{
        source::{KubernetesSource, Settings},
        watch::Lists,
    },
};

/// Runs the agent until SIGTERM or SIGINT: from the config file when `--config` is given, else
/// from the Kubernetes API.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let hierarchy = match &args.cgroup_root {
        Some(root) => Hierarchy::new(root.clone()),
        None => Hierarchy::discover().context("finding the cgroup2 hierarchy")?,
    };
    let kernel = crate::kernel::check()?;
    info!(%kernel, cgroup2 = %hierarchy.mount().display(), bpffs_dir = %args.pins.bpffs_dir.display(), "starting");
    let health = Health::default();
    let pins = PinDir::new(args.pins.bpffs_dir.clone());
    let engine = Engine::new(pins.clone(), hierarchy.clone(), &health);
    let sources = admin::Sources {
        status: engine.status(),
        health: health.clone(),
        pins,
    };
    for (flag, listen, endpoint) in [
        ("--admin-addr", args.admin_addr, Endpoint::Admin),
        ("--metrics-addr", args.metrics_addr, Endpoint::Metrics),
    ] {
        let Listen::At(addr) = listen else {
            continue;
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {flag} {addr}"))?;
        tokio::spawn(admin::serve(listener, endpoint, sources.clone()));
    }
    // A loop that ticks every resync interval, given slack for a slow reconcile.
    let silence = args.resync_interval * 3 + Duration::from_secs(30);
    let source = if let Some(path) = args.config {
        let (source, state) = FileSource::new(path, hierarchy);
        tokio::spawn(source.run(
            args.resync_interval,
            health.register("file-source", silence),
        ));
        state
    } else {
        let node = args.node_name.context(
            "Kubernetes mode needs --node-name (or NODE_NAME from the downward API); standalone mode needs --config",
        )?;
        let cluster_dns = match args.cluster_dns.as_str() {
            "none" | "" => None,
            value => Some(
                value
                    .split_once('/')
                    .map(|(ns, name)| (ns.to_owned(), name.to_owned()))
                    .with_context(|| format!("--cluster-dns {value:?}: use namespace/name"))?,
            ),
        };
        let settings = Settings {
            node,
            kubeconfig: args.cluster.kubeconfig,
            dns_servers: args.dns_servers,
            resync_interval: args.resync_interval,
            trusted_namespaces: crate::cli::namespaces(&args.cluster.trusted_namespaces),
            cluster_dns,
            node_local_dns: args.node_local_dns,
            lease_namespace: args.lease_namespace,
            kubelet_cgroup_roots: args.kubelet_cgroup_roots,
            lists: match args.list_page_size {
                0 => Lists::Cached,
                size => Lists::Paginated(size),
            },
        };
        let (source, state) = KubernetesSource::start(settings, hierarchy, &health).await?;
        tokio::spawn(source.run(
            engine.status(),
            health.register("kubernetes-source", silence),
        ));
        state
    };
    engine::run(
        engine,
        source,
        args.resync_interval,
        health.register("engine", silence),
    )
    .await
    .context("installing signal handlers")
}
