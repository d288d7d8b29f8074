//! Load generators for `cargo xtask bench`, run inside the cgroup under test. Each prints one
//! JSON line.
//!
//! ```text
//! egress-load rr ADDR SECONDS [CONNECTIONS]           1 KiB request, 1 KiB response, on
//!                                                     CONNECTIONS (default 1) connections at
//!                                                     once: transactions per second
//! egress-load bulk ADDR SECONDS                       write 64 KiB chunks: bytes per second
//! egress-load resolve DNS NAME COUNT                  COUNT x (A query to DNS:53, recvfrom the
//!                                                     answer): how many answers came back
//! egress-load resolve-connect DNS NAME PORT COUNT     COUNT x (A query to DNS:53, recvfrom the
//!                                                     answer, connect at once to its first
//!                                                     address on PORT, read the greeting):
//!                                                     how many greetings said "gateway"
//! ```
#![expect(clippy::print_stdout, reason = "the output is the measurement")]

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let line = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["rr", addr, seconds] => rr(parse(addr), secs(seconds), 1),
        ["rr", addr, seconds, connections] => rr(
            parse(addr),
            secs(seconds),
            connections.parse().expect("connections"),
        ),
        ["bulk", addr, seconds] => bulk(parse(addr), secs(seconds)),
        ["resolve", dns, name, count] => resolve_connect(
            dns.parse().expect("DNS server address"),
            name,
            None,
            count.parse().expect("count"),
        ),
        ["resolve-connect", dns, name, port, count] => resolve_connect(
            dns.parse().expect("DNS server address"),
            name,
            Some(port.parse().expect("port")),
            count.parse().expect("count"),
        ),
        _ => {
            eprintln!(
                "usage: egress-load rr ADDR SECONDS [CONNECTIONS] | bulk ADDR SECONDS | resolve DNS NAME COUNT | resolve-connect DNS NAME PORT COUNT"
            );
            std::process::exit(2);
        }
    };
    println!("{line}");
}

fn parse(addr: &str) -> SocketAddr {
    addr.parse()
        .unwrap_or_else(|err| panic!("bad address {addr}: {err}"))
}

fn secs(text: &str) -> Duration {
    Duration::from_secs(text.parse().expect("seconds"))
}

/// Request/response of 1 KiB each on `connections` connections (a thread each), for
/// `duration`.
fn rr(addr: SocketAddr, duration: Duration, connections: usize) -> serde_json::Value {
    let started = Instant::now();
    let workers: Vec<_> = (0..connections.max(1))
        .map(|_| {
            let mut stream = TcpStream::connect(addr).expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            std::thread::spawn(move || {
                let request = [b'q'; 1024];
                let mut response = [0_u8; 1024];
                let mut transactions = 0_u64;
                while started.elapsed() < duration {
                    stream.write_all(&request).expect("write");
                    stream.read_exact(&mut response).expect("read");
                    transactions += 1;
                }
                transactions
            })
        })
        .collect();
    let transactions: u64 = workers
        .into_iter()
        .map(|worker| worker.join().expect("worker"))
        .sum();
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let rate = transactions as f64 / started.elapsed().as_secs_f64();
    serde_json::json!({"transactions_per_second": rate})
}

/// Writes as fast as possible for `duration`.
fn bulk(addr: SocketAddr, duration: Duration) -> serde_json::Value {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let chunk = vec![0_u8; 64 * 1024];
    let started = Instant::now();
    let mut bytes = 0_u64;
    while started.elapsed() < duration {
        stream.write_all(&chunk).expect("write");
        bytes += chunk.len() as u64;
    }
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let rate = bytes as f64 / started.elapsed().as_secs_f64();
    serde_json::json!({"bytes_per_second": rate})
}

/// A DNS query for `name` (A, recursion desired) with `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(64);
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        message.push(u8::try_from(label.len()).expect("label length"));
        message.extend_from_slice(label.as_bytes());
    }
    message.extend_from_slice(&[0, 0, 1, 0, 1]);
    message
}

/// The first A record of an answer whose owner names are compressed pointers or plain names.
fn first_a(answer: &[u8]) -> Option<Ipv4Addr> {
    let count = usize::from(u16::from_be_bytes([*answer.get(6)?, *answer.get(7)?]));
    let mut pos = 12;
    // Skip the question: its name, type and class.
    while *answer.get(pos)? != 0 {
        pos += 1 + usize::from(*answer.get(pos)?);
    }
    pos += 5;
    for _ in 0..count {
        if answer.get(pos)? & 0xc0 == 0xc0 {
            pos += 2;
        } else {
            while *answer.get(pos)? != 0 {
                pos += 1 + usize::from(*answer.get(pos)?);
            }
            pos += 1;
        }
        let rtype = u16::from_be_bytes([*answer.get(pos)?, *answer.get(pos + 1)?]);
        let rdlen = usize::from(u16::from_be_bytes([
            *answer.get(pos + 8)?,
            *answer.get(pos + 9)?,
        ]));
        let data = pos + 10;
        if rtype == 1 && rdlen == 4 {
            let octets: [u8; 4] = answer.get(data..data + 4)?.try_into().ok()?;
            return Some(Ipv4Addr::from(octets));
        }
        pos = data + rdlen;
    }
    None
}

/// Resolve, then (with a port) connect the moment `recvfrom` returns, `count` times.
fn resolve_connect(dns: Ipv4Addr, name: &str, port: Option<u16>, count: u32) -> serde_json::Value {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let (mut gateway, mut direct, mut failed, mut answers) = (0_u32, 0_u32, 0_u32, 0_u32);
    let mut buf = [0_u8; 4096];
    for round in 0..count {
        let id = u16::try_from(round % 65_535).unwrap_or(0) + 1;
        socket
            .send_to(&query(id, name), (dns, 53))
            .expect("send query");
        let Ok((len, _)) = socket.recv_from(&mut buf) else {
            failed += 1;
            continue;
        };
        let Some(address) = first_a(&buf[..len]) else {
            failed += 1;
            continue;
        };
        answers += 1;
        let Some(port) = port else {
            continue;
        };
        let mut reply = String::new();
        match TcpStream::connect((address, port)).and_then(|mut s| s.read_to_string(&mut reply)) {
            Ok(_) if reply.trim() == "gateway" => gateway += 1,
            Ok(_) => direct += 1,
            Err(_) => failed += 1,
        }
    }
    serde_json::json!({"count": count, "answers": answers, "gateway": gateway, "direct": direct, "failed": failed})
}
