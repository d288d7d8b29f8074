//! Network namespaces and the links between them: the node, the "internet", and one per pod.
//!
//! ```text
//!  internet netns            node netns                         pod netns (one per pod)
//!  203.0.113.0/24 on lo      kube-proxy's nftables NAT          eth0 10.244.0.N/32
//!  192.0.2.53 (DNS) on lo    192.0.2.2 ── up0 ═══ 192.0.2.1     default via 10.244.0.1
//!                            10.244.0.1 on each pod veth ═══════ eth0
//! ```
//!
//! Pods are routed, not bridged (as Calico does it): every packet between two pods crosses the
//! node's netfilter, so kube-proxy's DNAT and its conntrack reversal see both directions.

use std::{
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Command, Output},
};

/// The node's address on its uplink; the API server advertises it.
pub const NODE_IP: &str = "192.0.2.2";
/// The internet's end of the uplink.
pub const UPLINK_IP: &str = "192.0.2.1";
/// The internet's DNS server (authoritative for the external zones).
pub const INTERNET_DNS: &str = "192.0.2.53";
/// The pods' gateway: the node's end of every pod link.
pub const POD_GATEWAY: &str = "10.244.0.1";
/// The pod network.
pub const POD_CIDR: &str = "10.244.0.0/16";

/// A network namespace the fixture made; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates it, with loopback up.
    pub fn new(name: &str) -> Self {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        let netns = Self {
            name: name.to_owned(),
        };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    /// `ip ARGS` inside the namespace; panics on failure.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        check(
            &self
                .command("sysctl")
                .args(["-qw", &format!("{key}={value}")])
                .output()
                .unwrap_or_else(|err| panic!("sysctl: {err}")),
            &format!("sysctl {key} in {}", self.name),
        );
    }

    /// `program` to be started inside the namespace. Only the network namespace changes
    /// (`nsenter`, not `ip netns exec`, which remounts /sys and so hides bpffs and cgroup2).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        Self::command_in(&self.name, program)
    }

    /// As [`Netns::command`], for the namespace called `name`.
    pub fn command_in(name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{name}"))
            .arg("--")
            .arg(program);
        command
    }

    /// Runs `make` on a thread inside the namespace: sockets made there stay in it, whatever
    /// thread uses them afterwards.
    pub fn within<T: Send + 'static>(&self, make: impl FnOnce() -> T + Send + 'static) -> T {
        let path = PathBuf::from("/run/netns").join(&self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path)
                .unwrap_or_else(|err| panic!("open {}: {err}", path.display()));
            // SAFETY: setns on a valid namespace fd; it changes only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "setns {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
            make()
        })
        .join()
        .expect("the thread in the namespace panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// `ip ARGS`; panics on failure.
pub fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("ip: {err}"));
    check(&output, &format!("ip {}", args.join(" ")));
}

/// Panics with the command's stderr when it failed.
pub fn check(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The node and the internet, linked; the internet routes the pod network back to the node,
/// so a pod's own connection arrives from its own address and is counted as direct.
pub fn node_and_internet(prefix: &str) -> (Netns, Netns) {
    let node = Netns::new(&format!("{prefix}-node"));
    let internet = Netns::new(&format!("{prefix}-net"));
    let (up, down) = (format!("{prefix}u"), format!("{prefix}d"));
    ip(&[
        "link",
        "add",
        &up,
        "netns",
        &node.name,
        "type",
        "veth",
        "peer",
        "name",
        &down,
        "netns",
        &internet.name,
    ]);
    node.ip(&["link", "set", &up, "name", "up0"]);
    node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "up0"]);
    node.ip(&["link", "set", "up0", "up"]);
    node.ip(&["route", "add", "default", "via", UPLINK_IP]);
    node.sysctl("net.ipv4.ip_forward", "1");
    internet.ip(&["link", "set", &down, "name", "down0"]);
    internet.ip(&["addr", "add", &format!("{UPLINK_IP}/24"), "dev", "down0"]);
    internet.ip(&["link", "set", "down0", "up"]);
    internet.ip(&["route", "add", POD_CIDR, "via", NODE_IP]);
    internet.ip(&["addr", "add", &format!("{INTERNET_DNS}/32"), "dev", "lo"]);
    (node, internet)
}

/// Gives the internet the address `ip` (an external host).
pub fn add_external(internet: &Netns, ip: &str) {
    internet.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
}

/// A pod's namespace linked to the node: `eth0` with `pod_ip`, routed through the node.
pub fn pod(node: &str, name: &str, veth: &str, pod_ip: &str) -> Netns {
    let pod = Netns::new(name);
    ip(&[
        "link", "add", veth, "netns", node, "type", "veth", "peer", "name", "eth0", "netns",
        &pod.name,
    ]);
    ip(&[
        "-n",
        node,
        "addr",
        "add",
        &format!("{POD_GATEWAY}/32"),
        "dev",
        veth,
    ]);
    ip(&["-n", node, "link", "set", veth, "up"]);
    ip(&[
        "-n",
        node,
        "route",
        "add",
        &format!("{pod_ip}/32"),
        "dev",
        veth,
    ]);
    pod.ip(&["addr", "add", &format!("{pod_ip}/32"), "dev", "eth0"]);
    pod.ip(&["link", "set", "eth0", "up"]);
    pod.ip(&["route", "add", POD_GATEWAY, "dev", "eth0"]);
    pod.ip(&["route", "add", "default", "via", POD_GATEWAY]);
    pod
}
