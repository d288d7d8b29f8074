//! The real Kubernetes of the `cluster` suite: one Go binary (`tests/cluster`) holding etcd,
//! kube-apiserver, kube-controller-manager, kube-proxy, kubectl and `CoreDNS` at one release, and
//! the Gateway API CRDs. Both come from the Go module proxy, once per exact version:
//!
//! ```text
//! ~/.cache/egress-agent/cluster/<key>/cluster          the binary
//! ~/.cache/egress-agent/cluster/<key>/gateway-api/     the Gateway API's standard CRDs
//! ```
//!
//! `<key>` is a hash of `tests/cluster`'s go.mod, go.sum and Go files and of the Gateway API
//! version: a changed pin builds again, an unchanged one never does. The binary is built into a
//! temporary name and renamed, so a half-built one is never found.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::shell;

/// The Kubernetes release of every `k8s.io` module in `tests/cluster/go.mod`.
pub(crate) const KUBERNETES_VERSION: &str = "v1.37.2";
/// The Gateway API release whose standard CRDs the suite installs.
const GATEWAY_API_VERSION: &str = "v1.6.3";
/// The oldest Go that builds `tests/cluster` (its go.mod's `go` line).
const GO_MINIMUM: (u32, u32) = (1, 26);

/// What the `cluster` suite needs: the binary and the CRD directory.
pub(crate) struct Built {
    /// The components' binary (`cluster <component> ...`).
    pub(crate) binary: PathBuf,
    /// The Gateway API CRDs (YAML files).
    pub(crate) gateway_crds: PathBuf,
}

/// Builds the binary and fetches the CRDs unless this exact version is cached.
pub(crate) fn build() -> anyhow::Result<Built> {
    check_go()?;
    let source = shell::root().join("tests/cluster");
    let dir = shell::cache_dir().join("cluster").join(key(&source)?);
    let built = Built {
        binary: dir.join("cluster"),
        gateway_crds: dir.join("gateway-api"),
    };
    if !built.gateway_crds.join("COMPLETE").exists() {
        shell::retrying("cluster: the Gateway API CRDs", || {
            gateway_crds(&built.gateway_crds)
        })?;
    }
    if !built.binary.exists() {
        std::fs::create_dir_all(&dir)?;
        let started = std::time::Instant::now();
        println!(
            "cluster: building Kubernetes {KUBERNETES_VERSION}, etcd and CoreDNS (once per version; about 20 minutes on 2 cores)"
        );
        // Modules first, retried: the build itself then needs no network.
        shell::run_fetch(
            "cluster: go mod download",
            Command::new("go")
                .args(["mod", "download"])
                .current_dir(&source),
        )?;
        let partial = dir.join("cluster.partial");
        let minor = KUBERNETES_VERSION
            .split('.')
            .nth(1)
            .context("a Kubernetes version has a minor")?;
        let version = "k8s.io/component-base/version";
        shell::run(
            Command::new("go")
                .args(["build", "-trimpath", "-o"])
                .arg(&partial)
                .arg(format!(
                    "-ldflags=-s -w -X {version}.gitVersion={KUBERNETES_VERSION} \
                     -X {version}.gitMajor=1 -X {version}.gitMinor={minor} \
                     -X {version}.gitTreeState=clean"
                ))
                .arg(".")
                .current_dir(&source),
        )?;
        std::fs::rename(&partial, &built.binary)?;
        println!("cluster: built in {:.0} s", started.elapsed().as_secs_f64());
    }
    Ok(built)
}

/// The cache key: the module's pins and code, and the CRDs' version.
fn key(source: &Path) -> anyhow::Result<String> {
    use sha2::{Digest as _, Sha256};
    let mut hash = Sha256::new();
    for file in ["go.mod", "go.sum", "main.go", "apiload.go"] {
        let path = source.join(file);
        hash.update(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
    }
    hash.update(GATEWAY_API_VERSION);
    let digest = shell::hex(&hash.finalize()[..8]);
    Ok(format!("{KUBERNETES_VERSION}-{digest}"))
}

/// Go must be there and new enough; the machine's own Go is used (no toolchain download).
fn check_go() -> anyhow::Result<()> {
    let version = shell::output(Command::new("go").args(["env", "GOVERSION"]))
        .context("Go is needed to build the test cluster (go1.26 or newer)")?;
    let numbers: Vec<u32> = version
        .trim()
        .trim_start_matches("go")
        .split('.')
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers.as_slice() {
        [major, minor, ..] if (*major, *minor) >= GO_MINIMUM => Ok(()),
        _ => bail!(
            "{} is too old to build the test cluster: go{}.{} or newer is needed",
            version.trim(),
            GO_MINIMUM.0,
            GO_MINIMUM.1
        ),
    }
}

/// Copies the standard channel's CRDs out of the `sigs.k8s.io/gateway-api` module.
fn gateway_crds(into: &Path) -> anyhow::Result<()> {
    let module = format!("sigs.k8s.io/gateway-api@{GATEWAY_API_VERSION}");
    // Outside any module, so tests/cluster's go.mod stays as it is.
    let out = shell::output(
        Command::new("go")
            .args(["mod", "download", "-json", &module])
            .current_dir(std::env::temp_dir())
            .env("GOFLAGS", "-mod=mod"),
    )?;
    let download: serde_json::Value =
        serde_json::from_str(&out).context("go mod download -json")?;
    let dir = download["Dir"]
        .as_str()
        .with_context(|| format!("go mod download gave no directory for {module}"))?;
    let standard = Path::new(dir).join("config/crd/standard");
    let _ = std::fs::remove_dir_all(into);
    std::fs::create_dir_all(into)?;
    let mut copied = 0;
    for entry in std::fs::read_dir(&standard)
        .with_context(|| format!("listing {}", standard.display()))?
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, into.join(entry.file_name()))?;
            copied += 1;
        }
    }
    if copied == 0 {
        bail!("no CRDs in {}", standard.display());
    }
    std::fs::write(into.join("COMPLETE"), GATEWAY_API_VERSION)?;
    Ok(())
}
