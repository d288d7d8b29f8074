//! The internet: HTTP origins on external addresses that record who connected, and an
//! authoritative DNS server (`CoreDNS` with zone files) for the external names.
//!
//! An origin counts a connection as **direct** when it comes from any address but the gateway
//! pod's: pods are routed without NAT, so a pod that went around the gateway shows its own IP.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener},
    sync::{Arc, Mutex},
};

use super::{RealCluster, netns};

/// An external host: its name, address and the lines of its zone.
#[derive(Clone, Copy, Debug)]
pub struct External {
    /// The hostname.
    pub name: &'static str,
    /// Its address in the internet.
    pub ip: &'static str,
}

/// The external hosts the suite uses.
pub const EXTERNALS: [External; 5] = [
    // The README's example Gateway routes httpbin.org.
    External {
        name: "httpbin.org",
        ip: "203.0.113.10",
    },
    // Rotating answers: four addresses, shuffled by the cluster DNS's loadbalance plugin.
    External {
        name: "rotating.example.test",
        ip: "203.0.113.21",
    },
    External {
        name: "rotating.example.test",
        ip: "203.0.113.22",
    },
    External {
        name: "rotating.example.test",
        ip: "203.0.113.23",
    },
    // Wildcard: every name under wild.example.test.
    External {
        name: "*.wild.example.test",
        ip: "203.0.113.30",
    },
];

/// Who connected to each origin address: peer IPs in arrival order.
#[derive(Clone, Debug, Default)]
pub struct Peers(Arc<Mutex<BTreeMap<IpAddr, Vec<IpAddr>>>>);

impl Peers {
    /// Connections to `origin` from anywhere but `gateway`.
    pub fn direct(&self, gateway: IpAddr) -> usize {
        self.0
            .lock()
            .expect("peers")
            .values()
            .flatten()
            .filter(|peer| **peer != gateway)
            .count()
    }

    /// Every connection, from anywhere.
    pub fn total(&self) -> usize {
        self.0.lock().expect("peers").values().map(Vec::len).sum()
    }

    /// Forgets what was recorded (between cases).
    pub fn clear(&self) {
        self.0.lock().expect("peers").clear();
    }
}

/// Starts the origins (port 80 on each external address) and the internet's DNS.
pub fn start(cluster: &mut RealCluster) -> Peers {
    let peers = Peers::default();
    let mut seen = Vec::new();
    for external in EXTERNALS {
        if seen.contains(&external.ip) {
            continue;
        }
        seen.push(external.ip);
        netns::add_external(&cluster.internet, external.ip);
        let addr: SocketAddr = format!("{}:80", external.ip).parse().expect("address");
        let listener = cluster
            .internet
            .within(move || TcpListener::bind(addr))
            .unwrap_or_else(|err| panic!("bind {addr}: {err}"));
        let peers = peers.clone();
        std::thread::spawn(move || serve(&listener, addr.ip(), &peers));
    }
    start_dns(cluster);
    peers
}

/// Answers each connection with a small HTTP response naming the peer, and records it.
fn serve(listener: &TcpListener, origin: IpAddr, peers: &Peers) {
    for stream in listener.incoming().flatten() {
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        peers
            .0
            .lock()
            .expect("peers")
            .entry(origin)
            .or_default()
            .push(peer.ip());
        let mut stream = stream;
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut request = [0_u8; 4096];
            let _ = stream.read(&mut request);
            let body = format!("origin {origin} saw {}\n", peer.ip());
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
    }
}

/// `CoreDNS` in the internet, authoritative for `httpbin.org` and `example.test`.
fn start_dns(cluster: &mut RealCluster) {
    let dir = cluster.dir.join("internet-dns");
    std::fs::create_dir_all(&dir).expect("mkdir internet-dns");
    let mut corefile = String::new();
    for zone in ["httpbin.org", "example.test"] {
        let mut records = format!(
            "$ORIGIN {zone}.\n$TTL 5\n@ IN SOA ns.{zone}. admin.{zone}. 1 60 60 60 5\n@ IN NS ns.{zone}.\nns IN A {dns}\n",
            dns = netns::INTERNET_DNS
        );
        for external in EXTERNALS.iter().filter(|e| e.name.ends_with(zone)) {
            let owner = if external.name == zone {
                "@".to_owned()
            } else {
                external
                    .name
                    .trim_end_matches(zone)
                    .trim_end_matches('.')
                    .to_owned()
            };
            let _ = writeln!(records, "{owner} IN A {}", external.ip);
        }
        let file = dir.join(format!("db.{zone}"));
        std::fs::write(&file, records).expect("write zone");
        let _ = write!(
            corefile,
            "{zone}:53 {{\n  file {file}\n  log\n}}\n",
            file = file.display()
        );
    }
    let conf = dir.join("Corefile");
    std::fs::write(&conf, corefile).expect("write Corefile");
    let mut command = cluster.internet.command(&cluster.bin);
    command.arg("coredns").arg("-conf").arg(&conf);
    let child = cluster.spawn_logged("internet-dns", &mut command);
    cluster.processes.push(("internet-dns".to_owned(), child));
}
