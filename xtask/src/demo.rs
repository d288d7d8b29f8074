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
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::shell::{self, release_bin};

const ORIGIN: &str = "127.0.0.20:8080";
const GATEWAY: &str = "127.0.0.30:8080";
const HOST: &str = "httpbin.test";

/// Everything the demo started; dropping it cleans up.
struct Sandbox {
    cgroup: PathBuf,
    bpffs_dir: PathBuf,
    dir: PathBuf,
    children: Vec<Child>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        shell::stop_and_uninstall(&mut self.children, &self.bpffs_dir);
        let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
        for sub in ["selected/app", "selected/gateway", "selected", "other", ""] {
            let path = self.cgroup.join(sub);
            for _ in 0..50 {
                if std::fs::remove_dir(&path).is_ok() || !path.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `command` inside the cgroup at `cgroup`.
pub(crate) fn in_cgroup(command: &mut Command, cgroup: &Path) -> anyhow::Result<()> {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&procs);
    // SAFETY: only write(2) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let _keep_open = &procs;
            if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    Ok(())
}

fn curl(cgroup: &Path) -> anyhow::Result<String> {
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
    in_cgroup(&mut command, cgroup)?;
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
    let mount = cgroup2_mount().context("no cgroup2 mount in /proc/self/mountinfo")?;
    let mut sandbox = Sandbox {
        cgroup: mount.join("egress-demo"),
        bpffs_dir: PathBuf::from("/sys/fs/bpf/egress-demo"),
        dir: std::env::temp_dir().join("egress-demo"),
        children: Vec::new(),
    };
    for sub in ["selected/app", "selected/gateway", "other"] {
        std::fs::create_dir_all(sandbox.cgroup.join(sub))?;
    }
    std::fs::create_dir_all(&sandbox.dir)?;

    sandbox.children.push(
        Command::new(release_bin("demo-http"))
            .args(["origin", ORIGIN, HOST])
            .spawn()?,
    );
    let mut gateway = Command::new(release_bin("demo-http"));
    gateway.args(["gateway", GATEWAY, &format!("{HOST}={ORIGIN}")]);
    in_cgroup(&mut gateway, &sandbox.cgroup.join("selected/gateway"))?;
    sandbox.children.push(gateway.spawn()?);

    let config = format!(
        "attach: {root}\nrules:\n  - name: httpbin\n    gateway: 127.0.0.30\n    addresses: [127.0.0.20]\n    ports:\n      - {{port: 8080, gatewayPort: 8080}}\nworkloads:\n  cgroups: [{root}/selected]\nexempt:\n  cgroups: [{root}/selected/gateway]\n",
        root = sandbox.cgroup.display()
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
    let direct = curl(&sandbox.cgroup.join("other"))?;
    println!("{direct}");
    println!(
        "== the same curl from a task INSIDE the selected cgroup (redirected at connect()) =="
    );
    let redirected = curl(&sandbox.cgroup.join("selected/app"))?;
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

/// The cgroup2 mount point from /proc/self/mountinfo.
pub(crate) fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}
