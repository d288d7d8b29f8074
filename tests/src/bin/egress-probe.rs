//! A client process for the integration tests: makes one connection or exchange and prints
//! what happened as one JSON line. The tests run it inside a cgroup, as a workload would.
//!
//! ```text
//! egress-probe tcp ADDR            connect, read the greeting, report getpeername
//! egress-probe udp ADDR            sendto, recvfrom: report the reply and its source
//! egress-probe udp-connected ADDR  connect, send, recv, report getpeername
//! egress-probe crr ADDR COUNT      COUNT x (connect, read to EOF, close); report ns/connection
//! ```
#![expect(clippy::print_stdout, reason = "the probe's output is its result")]

use std::{
    io::Read as _,
    net::{SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

const TIMEOUT: Duration = Duration::from_secs(2);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, addr, count] = args.as_slice() {
        assert_eq!(mode, "crr", "only crr takes a count");
        let addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|err| panic!("bad address {addr}: {err}"));
        let count: u32 = count
            .parse()
            .unwrap_or_else(|err| panic!("bad count {count}: {err}"));
        crr(addr, count);
        return;
    }
    let (mode, addr) = if let [_, mode, addr] = args.as_slice() {
        (mode.as_str(), addr.parse::<SocketAddr>())
    } else {
        eprintln!("usage: egress-probe tcp|udp|udp-connected ADDR | egress-probe crr ADDR COUNT");
        std::process::exit(2);
    };
    let addr = addr.unwrap_or_else(|err| panic!("bad address {}: {err}", args[2]));
    let result = match mode {
        "tcp" => tcp(addr),
        "udp" => udp(addr),
        "udp-connected" => udp_connected(addr),
        other => panic!("unknown mode {other}"),
    };
    let line = match result {
        Ok((reply, peer)) => {
            serde_json::json!({"ok": true, "reply": reply, "peer": peer.to_string()})
        }
        Err(err) => {
            serde_json::json!({"ok": false, "error": err.to_string(), "errno": err.raw_os_error()})
        }
    };
    println!("{line}");
}

fn tcp(addr: SocketAddr) -> std::io::Result<(String, SocketAddr)> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let peer = stream.peer_addr()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok((reply, peer))
}

fn bind_for(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = if addr.is_ipv4() {
        UdpSocket::bind("127.0.0.1:0")?
    } else {
        UdpSocket::bind("[::]:0")?
    };
    socket.set_read_timeout(Some(TIMEOUT))?;
    Ok(socket)
}

fn udp(addr: SocketAddr) -> std::io::Result<(String, SocketAddr)> {
    let socket = bind_for(addr)?;
    socket.send_to(b"ping", addr)?;
    let mut buf = [0; 512];
    let (len, from) = socket.recv_from(&mut buf)?;
    Ok((String::from_utf8_lossy(&buf[..len]).into_owned(), from))
}

fn udp_connected(addr: SocketAddr) -> std::io::Result<(String, SocketAddr)> {
    let socket = bind_for(addr)?;
    socket.connect(addr)?;
    socket.send(b"ping")?;
    let mut buf = [0; 512];
    let len = socket.recv(&mut buf)?;
    Ok((
        String::from_utf8_lossy(&buf[..len]).into_owned(),
        socket.peer_addr()?,
    ))
}

/// Connect/accept/close loop: the server closes first, so `TIME_WAIT` stays on its side.
fn crr(addr: SocketAddr, count: u32) {
    let start = std::time::Instant::now();
    let mut buf = [0; 16];
    for _ in 0..count {
        match TcpStream::connect(addr) {
            Ok(mut stream) => while stream.read(&mut buf).unwrap_or(0) > 0 {},
            // A server that resets on close can do so before connect() returns; the handshake
            // completed all the same.
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(err) => panic!("connect {addr}: {err}"),
        }
    }
    let elapsed = start.elapsed();
    let line = serde_json::json!({"count": count, "ns_per_connection": elapsed.as_nanos() / u128::from(count.max(1))});
    println!("{line}");
}
