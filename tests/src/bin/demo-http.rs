//! Tiny HTTP/1.1 processes for `cargo xtask demo`:
//!
//! ```text
//! demo-http origin ADDR NAME                 answers every request itself
//! demo-http gateway ADDR HOST=UPSTREAM ...   forwards by Host header, adds `Via: 1.1 egress-gateway`
//! ```
//!
//! The gateway stands in for an Istio/Kuadrant egress gateway: it routes by Host, like an
//! `HTTPRoute`, and its own connection to the origin is what the agent must leave alone.

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::Arc,
    thread,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, addr, rest) = match args.as_slice() {
        [mode, addr, rest @ ..] => (mode.as_str(), addr.as_str(), rest),
        _ => usage(),
    };
    let listener = TcpListener::bind(addr).unwrap_or_else(|err| panic!("bind {addr}: {err}"));
    match mode {
        "origin" => {
            let name = Arc::new(rest.first().cloned().unwrap_or_else(|| "origin".to_owned()));
            serve(&listener, move |stream| origin(stream, &name));
        }
        "gateway" => {
            let routes: HashMap<String, SocketAddr> = rest
                .iter()
                .map(|route| {
                    let (host, upstream) = route.split_once('=').unwrap_or_else(|| usage());
                    (
                        host.to_owned(),
                        upstream
                            .parse()
                            .unwrap_or_else(|err| panic!("{upstream}: {err}")),
                    )
                })
                .collect();
            let routes = Arc::new(routes);
            serve(&listener, move |stream| gateway(stream, &routes));
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: demo-http origin ADDR NAME | demo-http gateway ADDR HOST=UPSTREAM...");
    std::process::exit(2)
}

fn serve(listener: &TcpListener, handle: impl Fn(TcpStream) + Send + Sync + Clone + 'static) {
    for stream in listener.incoming().flatten() {
        let handle = handle.clone();
        thread::spawn(move || handle(stream));
    }
}

/// Reads the request head (up to the blank line).
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 || head.len() > 16 * 1024 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}

fn origin(mut stream: TcpStream, name: &str) {
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let body = format!("hello from {name} (the origin), you asked for {path}\n");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

fn gateway(mut client: TcpStream, routes: &HashMap<String, SocketAddr>) {
    let Some(head) = read_head(&mut client) else {
        return;
    };
    let host = head
        .lines()
        .find_map(|line| {
            line.strip_prefix("Host: ")
                .or_else(|| line.strip_prefix("host: "))
        })
        .map(|h| h.split(':').next().unwrap_or(h).trim().to_owned())
        .unwrap_or_default();
    let Some(upstream) = routes.get(&host) else {
        let _ = client.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 21\r\nConnection: close\r\n\r\nno route for this Host");
        return;
    };
    eprintln!("gateway: Host {host} -> {upstream}");
    let Ok(mut origin) = TcpStream::connect(upstream) else {
        let _ = client.write_all(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    };
    let _ = origin.write_all(head.as_bytes());
    let mut response = Vec::new();
    let _ = origin.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let forwarded = match text.split_once("\r\n") {
        Some((status, rest)) => format!("{status}\r\nVia: 1.1 egress-gateway\r\n{rest}"),
        None => text.into_owned(),
    };
    let _ = client.write_all(forwarded.as_bytes());
}
