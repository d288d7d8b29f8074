//! `cargo xtask demo`: the main job in a sandbox on loopback, no cluster needed.
//!
//! ```text
//! <cgroup2>/egress-demo/                 the agent attaches here
//!   selected/                            workloads (like a labelled namespace)
//!     app/        curl                   -> redirected to the gateway
//!     gateway/    demo-http gateway      exempt: reaches the origin directly
//!   other/        curl                   -> direct
//! origin  "httpbin.test" at 127.0.0.20:8080
//! gateway                at 127.0.0.30:8080, routes by Host, adds `Via: 1.1 egress-gateway`
//! ```

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use egress_tests::TestCgroup;

use crate::shell::{self, release_bin};

const ORIGIN: &str = "127.0.0.20:8080";
const GATEWAY: &str = "127.0.0.30:8080";
const HOST: &str = "httpbin.test";

/// Everything the demo started; dropping it cleans up (processes first, then the cgroups, each
/// child before its parent).
struct Sandbox {
    bpffs_dir: PathBuf,
    dir: PathBuf,
    children: Vec<Child>,
    app: TestCgroup,
    gateway: TestCgroup,
    selected: TestCgroup,
    other: TestCgroup,
    root: TestCgroup,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        shell::stop_and_uninstall(&mut self.children, &self.bpffs_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn curl(cgroup: &TestCgroup) -> anyhow::Result<String> {
    let mut command = Command::new("curl");
    command.args([
        "-sS",
        "-i",
        "--max-time",
        "3",
        "--resolve",
        &format!("{HOST}:8080:127.0.0.20"),
        &format!("http://{HOST}:8080/get"),
    ]);
    cgroup.enter(&mut command);
    let output = command.output().context("running curl")?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
    .replace('\r', ""))
}

/// Runs the demo.
pub(crate) fn run() -> anyhow::Result<()> {
    shell::release_binaries("the demo attaches eBPF programs")?;
    let root = TestCgroup::named("egress-demo");
    let selected = root.child("selected");
    let mut sandbox = Sandbox {
        bpffs_dir: PathBuf::from("/sys/fs/bpf/egress-demo"),
        dir: std::env::temp_dir().join("egress-demo"),
        children: Vec::new(),
        app: selected.child("app"),
        gateway: selected.child("gateway"),
        selected,
        other: root.child("other"),
        root,
    };
    std::fs::create_dir_all(&sandbox.dir)?;

    sandbox.children.push(
        Command::new(release_bin("demo-http"))
            .args(["origin", ORIGIN, HOST])
            .spawn()?,
    );
    let mut gateway = Command::new(release_bin("demo-http"));
    gateway.args(["gateway", GATEWAY, &format!("{HOST}={ORIGIN}")]);
    sandbox.gateway.enter(&mut gateway);
    sandbox.children.push(gateway.spawn()?);

    let config = format!(
        "attach: {root}\nrules:\n  - name: httpbin\n    gateway: 127.0.0.30\n    addresses: [127.0.0.20]\n    ports:\n      - {{port: 8080, gatewayPort: 8080}}\nworkloads:\n  cgroups: [{selected}]\nexempt:\n  cgroups: [{gateway}]\n",
        root = sandbox.root.path().display(),
        selected = sandbox.selected.path().display(),
        gateway = sandbox.gateway.path().display(),
    );
    let config_path = sandbox.dir.join("config.yaml");
    std::fs::write(&config_path, &config)?;
    println!("\n== config ({}) ==\n{config}", config_path.display());
    let log = std::fs::File::create(sandbox.dir.join("agent.log"))?;
    sandbox.children.push(
        Command::new(release_bin("egress-agent"))
            .args(["run", "--config"])
            .arg(&config_path)
            .arg("--bpffs-dir")
            .arg(&sandbox.bpffs_dir)
            .stderr(log)
            .stdout(Stdio::null())
            .spawn()?,
    );
    wait_for_routes(&sandbox.bpffs_dir)?;

    println!(
        "== curl http://{HOST}:8080/get from a task OUTSIDE the selected cgroup (goes direct) =="
    );
    let direct = curl(&sandbox.other)?;
    println!("{direct}");
    println!(
        "== the same curl from a task INSIDE the selected cgroup (redirected at connect()) =="
    );
    let redirected = curl(&sandbox.app)?;
    println!("{redirected}");
    for view in ["routes", "cgroups", "stats"] {
        println!("== egress-agent maps {view} ==");
        let text = shell::output(
            Command::new(release_bin("egress-agent"))
                .args(["maps", view, "--bpffs-dir"])
                .arg(&sandbox.bpffs_dir),
        )?;
        println!("{text}");
    }
    let ok = !direct.contains("Via: 1.1 egress-gateway")
        && direct.contains("200 OK")
        && redirected.contains("Via: 1.1 egress-gateway")
        && redirected.contains("hello from httpbin.test");
    drop(sandbox);
    if !ok {
        bail!(
            "demo failed: expected only the selected client's response to carry `Via: 1.1 egress-gateway`"
        );
    }
    println!(
        "demo: OK: the selected client went through the gateway (Via header), the other went direct; sandbox removed"
    );
    Ok(())
}

fn wait_for_routes(bpffs_dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let out = Command::new(release_bin("egress-agent"))
            .args(["maps", "routes", "-o", "json", "--bpffs-dir"])
            .arg(bpffs_dir)
            .output()?;
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("httpbin") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the agent did not program its routes in time")
}
