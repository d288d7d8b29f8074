//! The `egress-agent` binary: daemon and CLI.

use std::io::{IsTerminal as _, Write as _};

use anyhow::Context as _;
use clap::Parser as _;
use tracing_subscriber::{EnvFilter, fmt};

use egress_agent::{
    admin,
    bpffs::PinDir,
    cli,
    cli::{Cli, Command, LogFormat},
    datapath, explain, inspect, k8s, run, status,
};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Run(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?
            .block_on(run::run(*args)),
        Command::Maps(args) => {
            let pins = PinDir::new(args.pins.bpffs_dir);
            let text =
                inspect::render(&pins, args.which, args.output, args.cgroup_root.as_deref())?;
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("writing to stdout")
        }
        Command::Status(args) => {
            let document = admin::fetch_status(args.admin_addr).with_context(|| {
                format!(
                    "asking the agent at {} (is it running? see --admin-addr)",
                    args.admin_addr
                )
            })?;
            let text = match args.output {
                cli::Output::Json => format!("{}\n", serde_json::to_string_pretty(&document)?),
                cli::Output::Table => status::render(&document),
            };
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("writing to stdout")
        }
        Command::Preflight => {
            let mut out = std::io::stdout();
            let kernel = egress_agent::kernel::check()?;
            writeln!(out, "kernel {kernel}: supported")?;
            for (program, verified) in datapath::preflight()? {
                let verified = verified.map_or_else(|| "-".to_owned(), |n| n.to_string());
                writeln!(
                    out,
                    "{program:<14} loaded   verified instructions: {verified}"
                )?;
            }
            Ok(())
        }
        Command::Explain(args) => {
            let text = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?
                .block_on(explain::run(*args))?;
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("writing to stdout")
        }
        Command::MountBpffs { at } => {
            let mounted = egress_agent::bpffs::ensure_mounted(&at)?;
            let what = if mounted {
                "mounted bpffs at"
            } else {
                "bpffs already mounted at"
            };
            writeln!(std::io::stdout(), "{what} {}", at.display()).context("writing to stdout")
        }
        Command::Crd => std::io::stdout()
            .write_all(k8s::crd::crd_yaml().as_bytes())
            .context("writing to stdout"),
        Command::Uninstall(args) => {
            let pins = PinDir::new(args.bpffs_dir);
            let removed = datapath::uninstall(&pins)?;
            writeln!(
                std::io::stdout(),
                "removed {removed} links and every pinned map under {}",
                pins.root().display()
            )
            .context("writing to stdout")
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("EGRESS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
