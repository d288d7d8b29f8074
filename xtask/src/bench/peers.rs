//! The other ways of sending connections elsewhere, set up inside the benchmark's network
//! namespace: an nftables map DNAT, iptables DNAT rules (nft and legacy back ends), and the
//! sidecar pattern (iptables REDIRECT to a userspace TCP proxy, haproxy).

use std::{
    fmt::Write as _,
    io::Write as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::shell;

/// The routed destination the clients dial; everything sends it to 127.0.0.1.
pub(crate) const ROUTED: &str = "127.0.0.2";

/// `count` distinct addresses that never match (127.128.0.0/9), for filler rules.
fn filler(count: usize) -> impl Iterator<Item = String> {
    (0..u32::try_from(count).unwrap_or(u32::MAX)).map(|i| {
        let [_, b, c, d] = (0x7f80_0000_u32 + i).to_be_bytes();
        format!("127.{b}.{c}.{d}")
    })
}

fn feed(mut command: Command, script: &str) -> anyhow::Result<()> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("{command:?}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(script.as_bytes())?;
    if !child.wait()?.success() {
        bail!("{command:?} failed");
    }
    Ok(())
}

/// Removes every nftables and iptables rule in this namespace.
pub(crate) fn clear() -> anyhow::Result<()> {
    shell::run(Command::new("nft").arg("flush ruleset"))?;
    shell::run(Command::new("iptables-legacy").args(["-t", "nat", "-F", "OUTPUT"]))?;
    Ok(())
}

/// An nftables map of `elements` (address . port → 127.0.0.1 . port), one `dnat` rule
/// looking the destination up in it.
pub(crate) fn nft_map(elements: usize, port: u16) -> anyhow::Result<()> {
    clear()?;
    let mut script = String::from(
        "table ip bench {\n  map to {\n    type ipv4_addr . inet_service : ipv4_addr . inet_service\n    elements = {\n",
    );
    for address in filler(elements.saturating_sub(1)).chain([ROUTED.to_owned()]) {
        let _ = writeln!(script, "      {address} . {port} : 127.0.0.1 . {port},");
    }
    script.push_str(
        "    }\n  }\n  chain out {\n    type nat hook output priority -100;\n    dnat ip to ip daddr . tcp dport map @to\n  }\n}\n",
    );
    let mut command = Command::new("nft");
    command.args(["-f", "-"]);
    feed(command, &script)
}

/// Which iptables back end.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Iptables {
    /// `iptables-nft`: the rules become nftables rules.
    Nft,
    /// `iptables-legacy`: `x_tables`.
    Legacy,
}

/// `rules` DNAT rules in nat OUTPUT: `rules - 1` that never match, then the one that sends the
/// routed destination to 127.0.0.1 (the worst case of a linear chain).
pub(crate) fn iptables_dnat(backend: Iptables, rules: usize, port: u16) -> anyhow::Result<()> {
    clear()?;
    let mut script = String::from("*nat\n:OUTPUT ACCEPT [0:0]\n");
    for address in filler(rules.saturating_sub(1)).chain([ROUTED.to_owned()]) {
        let _ = writeln!(
            script,
            "-A OUTPUT -d {address}/32 -p tcp --dport {port} -j DNAT --to-destination 127.0.0.1:{port}"
        );
    }
    script.push_str("COMMIT\n");
    let restore = match backend {
        Iptables::Nft => "iptables-nft-restore",
        Iptables::Legacy => "iptables-legacy-restore",
    };
    feed(Command::new(restore), &script)
}

/// haproxy in TCP mode as a sidecar: the routed destination's ports are redirected to it, and
/// it forwards to 127.0.0.1. Dropping it stops haproxy and clears the rules.
pub(crate) struct Sidecar {
    child: Child,
    config: PathBuf,
}

impl Sidecar {
    /// Proxies each of `upstreams` (ports on 127.0.0.1) on a frontend of its own, and
    /// redirects `ROUTED:port` to that frontend.
    pub(crate) fn start(upstreams: &[u16]) -> anyhow::Result<Self> {
        clear()?;
        let mut config = String::from(
            "global\n  maxconn 4096\n  nbthread 2\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n",
        );
        let mut rules = String::from("*nat\n:OUTPUT ACCEPT [0:0]\n");
        for (index, upstream) in upstreams.iter().enumerate() {
            let frontend = 40_000 + u16::try_from(index)?;
            let _ = write!(
                config,
                "frontend f{index}\n  bind 127.0.0.1:{frontend}\n  default_backend b{index}\nbackend b{index}\n  server s 127.0.0.1:{upstream}\n"
            );
            let _ = writeln!(
                rules,
                "-A OUTPUT -d {ROUTED}/32 -p tcp --dport {upstream} -j REDIRECT --to-ports {frontend}"
            );
        }
        rules.push_str("COMMIT\n");
        let path = std::env::temp_dir().join("egress-bench-haproxy.cfg");
        std::fs::write(&path, config)?;
        let log = std::env::temp_dir().join("egress-bench-haproxy.log");
        let mut child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting haproxy")?;
        std::thread::sleep(Duration::from_millis(500));
        if let Some(status) = child.try_wait()? {
            bail!(
                "haproxy exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        feed(Command::new("iptables-nft-restore"), &rules)?;
        Ok(Self {
            child,
            config: path,
        })
    }

    /// `haproxy -v`'s first line.
    pub(crate) fn version() -> String {
        shell::output(Command::new("haproxy").arg("-v"))
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = clear();
        let _ = std::fs::remove_file(&self.config);
    }
}
