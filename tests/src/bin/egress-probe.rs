//! A client process for the integration tests: makes one connection or exchange and prints
//! what happened as one JSON line. The tests run it inside a cgroup, as a workload would.
//!
//! ```text
//! egress-probe tcp ADDR            connect, read the greeting, report getpeername
//! egress-probe udp ADDR            sendto, recvfrom: report the reply and its source
//! egress-probe udp-connected ADDR  connect, send, recv, report getpeername
//! egress-probe crr ADDR COUNT      COUNT x (connect, read to EOF, close); report ns/connection
//! egress-probe tcp-v6only ADDR     as tcp, from an IPV6_V6ONLY socket (no IPv4-mapped peers)
//! egress-probe udp-hold ADDR       connect, exchange, wait for a line on stdin, exchange again
//!                                  on the same socket: one JSON line per exchange
//! egress-probe uring-connect ADDR  socket(), then connect through io_uring with IOSQE_ASYNC
//!                                  (an io-wq worker runs it), read the greeting
//! ```
#![expect(clippy::print_stdout, reason = "the probe's output is its result")]

use std::{
    io::Read as _,
    net::{SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

/// How long a connect or a read may take before the probe reports failure; stretched by
/// `EGRESS_TEST_TIME_SCALE` (inherited from the test) like every wait of the tests.
fn timeout() -> Duration {
    egress_tests::scaled(Duration::from_secs(2))
}

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
        "udp-hold" => udp_hold(addr),
        "uring-connect" => uring_connect(addr),
        "tcp-v6only" => tcp_v6only(addr),
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
    greeting(TcpStream::connect_timeout(&addr, timeout())?)
}

/// What a connected stream's server says before it closes, and the peer address reported.
fn greeting(mut stream: TcpStream) -> std::io::Result<(String, SocketAddr)> {
    stream.set_read_timeout(Some(timeout()))?;
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
    socket.set_read_timeout(Some(timeout()))?;
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

/// A long-lived connected UDP socket, as c-ares keeps one: one exchange now, one more after
/// the test writes a line to stdin.
fn udp_hold(addr: SocketAddr) -> std::io::Result<(String, SocketAddr)> {
    let socket = bind_for(addr)?;
    socket.connect(addr)?;
    let exchange = |payload: &[u8]| -> std::io::Result<(String, SocketAddr)> {
        socket.send(payload)?;
        let mut buf = [0; 512];
        let len = socket.recv(&mut buf)?;
        Ok((
            String::from_utf8_lossy(&buf[..len]).into_owned(),
            socket.peer_addr()?,
        ))
    };
    let (reply, peer) = exchange(b"first")?;
    println!(
        "{}",
        serde_json::json!({"ok": true, "reply": reply, "peer": peer.to_string()})
    );
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    exchange(b"second")
}

/// A TCP connect from an `IPV6_V6ONLY` socket.
fn tcp_v6only(addr: SocketAddr) -> std::io::Result<(String, SocketAddr)> {
    use std::os::fd::AsRawFd as _;
    let stream = stream_socket(libc::AF_INET6)?;
    let fd = stream.as_raw_fd();
    let one: libc::c_int = 1;
    // SAFETY: a valid option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            (&raw const one).cast(),
            libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: a valid address of the length passed.
    if unsafe { libc::connect(fd, (&raw const storage).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    greeting(stream)
}

/// `IORING_OP_CONNECT` with `IOSQE_ASYNC`: the connect runs in an io-wq worker, which on
/// 5.10/5.11 is a kernel thread outside the task's cgroup.
fn uring_connect(addr: SocketAddr) -> std::io::Result<(String, SocketAddr)> {
    use std::os::fd::AsRawFd as _;
    let stream = stream_socket(if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    })?;
    let (storage, len) = sockaddr(addr);
    let mut ring = io_uring::IoUring::new(4)?;
    let connect = io_uring::opcode::Connect::new(
        io_uring::types::Fd(stream.as_raw_fd()),
        (&raw const storage).cast(),
        len,
    )
    .build()
    .flags(io_uring::squeue::Flags::ASYNC);
    // SAFETY: `storage` outlives the submission, which completes before it is dropped.
    unsafe { ring.submission().push(&connect) }
        .map_err(|_| std::io::Error::other("submission queue full"))?;
    ring.submit_and_wait(1)?;
    let result = ring
        .completion()
        .next()
        .ok_or_else(|| std::io::Error::other("no completion"))?
        .result();
    if result < 0 {
        return Err(std::io::Error::from_raw_os_error(-result));
    }
    greeting(stream)
}

/// A new, unconnected TCP socket of `family`.
fn stream_socket(family: libc::c_int) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor this function owns.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}

/// `addr` as a `sockaddr_storage` and its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, libc::socklen_t::try_from(len).unwrap_or(0))
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
