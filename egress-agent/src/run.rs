//! `egress-agent run`: wires a source to the engine and serves the admin endpoint.
//!
//! ```text
//! file source (--config) ─┐
//!                         ├─ SourceState ─► engine::run ─► maps
//! Kubernetes source ──────┘                     │
//!                                               └─► admin endpoint (/live, /ready, /status)
//! ```

use std::net::SocketAddr;

use anyhow::Context as _;
use tracing::info;

use crate::{
    admin,
    bpffs::PinDir,
    cgroupfs::Hierarchy,
    cli::RunArgs,
    engine::{self, Engine},
    file::FileSource,
    k8s::source::{KubernetesSource, Settings},
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
    let engine = Engine::new(PinDir::new(args.pins.bpffs_dir.clone()), hierarchy.clone());
    if args.admin_addr != "off" {
        let addr: SocketAddr = args.admin_addr.parse().context("--admin-addr")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the admin endpoint {addr}"))?;
        tokio::spawn(admin::serve(listener, engine.status()));
    }
    let source = if let Some(path) = args.config {
        let (source, state) = FileSource::new(path, hierarchy);
        tokio::spawn(source.run(args.resync_interval));
        state
    } else {
        let node = args.node_name.context(
            "Kubernetes mode needs --node-name (or NODE_NAME from the downward API); standalone mode needs --config",
        )?;
        let settings = Settings {
            node,
            kubeconfig: args.kubeconfig,
            dns_servers: args.dns_servers,
            resync_interval: args.resync_interval,
        };
        let (source, state) = KubernetesSource::start(settings, hierarchy).await?;
        tokio::spawn(source.run(engine.status()));
        state
    };
    engine::run(engine, source, args.resync_interval)
        .await
        .context("installing signal handlers")
}
