//! The agent's local admin endpoint: `/live`, `/ready` and `/status` (JSON) over HTTP/1.
//!
//! `/ready` answers 200 once the programs are attached and a valid configuration is in force.
//! `/status` is what `egress-agent status` shows: the configuration's state (including why the
//! last edit was rejected), conflicts between rules, and every hostname's addresses and health.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use serde::Serialize;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tracing::{debug, info};

use crate::dns::{DnsEngine, HostStatus};

/// Default address of the admin endpoint.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9901";

/// What the agent reports about itself.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// The configuration file.
    pub config_path: String,
    /// Whether a valid configuration is in force.
    pub config_loaded: bool,
    /// Why the last edit of the file was rejected (cleared by the next valid one).
    pub config_error: Option<String>,
    /// Whether the programs are attached.
    pub attached: bool,
    /// Routes installed by the last reconcile.
    pub routes: usize,
    /// Cgroup entries installed by the last reconcile.
    pub cgroups: usize,
    /// Configured cgroups that do not exist (yet).
    pub missing_cgroups: Vec<String>,
    /// Destinations claimed by two rules with different gateways.
    pub conflicts: Vec<ConflictStatus>,
    /// The last reconcile's error, if it failed.
    pub reconcile_error: Option<String>,
}

/// A conflict between two rules.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConflictStatus {
    /// Address or CIDR.
    pub destination: String,
    /// Port.
    pub port: u16,
    /// `TCP` or `UDP`.
    pub protocol: String,
    /// The rule whose gateway is installed (first in config order).
    pub winner: String,
    /// The rule that lost.
    pub loser: String,
}

/// The `/status` document.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDocument {
    /// The agent.
    pub agent: AgentStatus,
    /// Every hostname.
    pub hosts: Vec<HostStatus>,
}

/// Shared, updated by the agent loop, read by the endpoint.
pub type SharedStatus = Arc<Mutex<AgentStatus>>;

/// Serves the endpoint on `listener` forever.
pub async fn serve(listener: TcpListener, status: SharedStatus, engine: DnsEngine) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin endpoint listening");
    }
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let status = status.clone();
        let engine = engine.clone();
        tokio::spawn(async move {
            if let Err(err) = handle(stream, &status, &engine).await {
                debug!(%peer, error = %err, "admin request failed");
            }
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    status: &SharedStatus,
    engine: &DnsEngine,
) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let read = stream.read(&mut buf).await?;
        if read == 0 {
            break;
        }
        request.extend_from_slice(&buf[..read]);
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split_whitespace().nth(1).unwrap_or("/");
    let agent = status
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let (code, body) = match path {
        "/live" | "/healthz" => ("200 OK", "ok\n".to_owned()),
        "/ready" if agent.attached && agent.config_loaded => ("200 OK", "ready\n".to_owned()),
        "/ready" => ("503 Service Unavailable", "not ready\n".to_owned()),
        "/status" => {
            let document = StatusDocument {
                agent,
                hosts: engine.status(),
            };
            (
                "200 OK",
                serde_json::to_string_pretty(&document).unwrap_or_default(),
            )
        }
        _ => ("404 Not Found", "try /live, /ready or /status\n".to_owned()),
    };
    let content_type = if path == "/status" {
        "application/json"
    } else {
        "text/plain"
    };
    let response = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Fetches `/status` from a running agent (blocking; for the CLI).
pub fn fetch_status(addr: SocketAddr) -> std::io::Result<serde_json::Value> {
    use std::io::{Read as _, Write as _};
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    stream.write_all(b"GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    serde_json::from_str(body).map_err(std::io::Error::other)
}
