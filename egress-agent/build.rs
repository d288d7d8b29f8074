//! Builds the eBPF object from egress-ebpf with aya-build (nightly, bpf-linker) into `OUT_DIR`,
//! where `src/ebpf/loader.rs` embeds it. `cargo xtask setup` installs the toolchain.
use std::path::Path;

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root_dir = Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("egress-agent has no parent directory"))?
        .join("egress-ebpf");
    let root_dir = root_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", root_dir.display()))?;
    let package = aya_build::Package {
        name: "egress-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
