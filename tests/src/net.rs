//! Loopback servers and the probe client.

use std::{
    io::Write as _,
    net::{SocketAddr, TcpListener, UdpSocket},
    process::Command,
    thread,
};

use crate::TestCgroup;

/// A TCP and a UDP server on one loopback address and port, each answering with its label.
/// The TCP side writes the label and closes; the UDP side replies `label:payload`.
#[derive(Debug)]
pub struct Server {
    /// Where it listens (TCP and UDP share the port number).
    pub addr: SocketAddr,
}

impl Server {
    /// Starts a server labelled `label` on `ip`, on a port free for both TCP and UDP.
    pub fn start(ip: &str, label: &'static str) -> Self {
        for _ in 0..100 {
            let tcp =
                TcpListener::bind((ip, 0)).unwrap_or_else(|err| panic!("bind tcp {ip}: {err}"));
            let addr = tcp.local_addr().expect("local addr");
            let Ok(udp) = UdpSocket::bind(addr) else {
                continue;
            };
            return Self::serve(tcp, udp, label);
        }
        panic!("no port free for both TCP and UDP on {ip}");
    }

    /// Starts a server labelled `label` on `ip:port` exactly.
    pub fn bind(ip: &str, port: u16, label: &'static str) -> std::io::Result<Self> {
        let tcp = TcpListener::bind((ip, port))?;
        let udp = UdpSocket::bind(tcp.local_addr()?)?;
        Ok(Self::serve(tcp, udp, label))
    }

    fn serve(tcp: TcpListener, udp: UdpSocket, label: &'static str) -> Self {
        let addr = tcp.local_addr().expect("local addr");
        thread::spawn(move || {
            for mut stream in tcp.incoming().flatten() {
                let _ = stream.write_all(label.as_bytes());
            }
        });
        thread::spawn(move || {
            let mut buf = [0; 512];
            while let Ok((len, from)) = udp.recv_from(&mut buf) {
                let reply = format!("{label}:{}", String::from_utf8_lossy(&buf[..len]));
                let _ = udp.send_to(reply.as_bytes(), from);
            }
        });
        Self { addr }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// What a probe saw.
#[derive(Debug, serde::Deserialize)]
pub struct Probe {
    /// Whether the exchange worked.
    pub ok: bool,
    /// The server's answer.
    #[serde(default)]
    pub reply: String,
    /// getpeername / recvfrom source.
    #[serde(default)]
    pub peer: String,
    /// The error, when not ok.
    #[serde(default)]
    pub error: String,
    /// The errno, when not ok.
    #[serde(default)]
    pub errno: Option<i32>,
}

impl Probe {
    /// Runs `egress-probe MODE ADDR` inside `cgroup`.
    pub fn run(cgroup: &TestCgroup, mode: &str, addr: &str) -> Self {
        let mut command = Command::new(crate::workspace_bin("egress-probe"));
        command.args([mode, addr]);
        cgroup.enter(&mut command);
        let output = command
            .output()
            .unwrap_or_else(|err| panic!("run probe: {err}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|err| {
            panic!(
                "probe {mode} {addr} in {}: {err}; stdout {stdout:?}, stderr {:?}",
                cgroup.path().display(),
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }

    /// The reply, or a panic saying what happened instead.
    pub fn reply(&self) -> &str {
        assert!(self.ok, "probe failed: {self:?}");
        &self.reply
    }
}
