//! The agent's local admin endpoint: `/live`, `/ready` and `/status` (JSON) over HTTP/1.
//!
//! `/ready` answers 200 once the programs are attached and a valid configuration is in force.
//! `/status` is what `egress-agent status` shows: the configuration's state (including why the
//! last edit was rejected), conflicts between rules, and every hostname's addresses and health.

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tracing::{debug, info};

use crate::{engine::StatusHandle, status::StatusDocument};

/// Default address of the admin endpoint.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9901";

/// Errors asking a running agent for its status.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The endpoint could not be reached or the exchange failed.
    #[error("cannot reach the admin endpoint")]
    Io(#[from] std::io::Error),
    /// The answer is not an HTTP response with a body.
    #[error("the admin endpoint's answer has no body")]
    NoBody,
    /// The body is not a status document.
    #[error("the admin endpoint's answer is not a status document")]
    Decode(#[from] serde_json::Error),
}

/// Serves the endpoint on `listener` forever.
pub async fn serve(listener: TcpListener, status: StatusHandle) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin endpoint listening");
    }
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let status = status.clone();
        tokio::spawn(async move {
            if let Err(err) = handle(stream, &status).await {
                debug!(%peer, error = %err, "admin request failed");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, status: &StatusHandle) -> std::io::Result<()> {
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
    let (code, body) = match path {
        "/live" | "/healthz" => ("200 OK", "ok\n".to_owned()),
        "/ready" if status.ready() => ("200 OK", "ready\n".to_owned()),
        "/ready" => ("503 Service Unavailable", "not ready\n".to_owned()),
        "/status" => (
            "200 OK",
            serde_json::to_string_pretty(&status.document()).unwrap_or_default(),
        ),
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
pub fn fetch_status(addr: std::net::SocketAddr) -> Result<StatusDocument, AdminError> {
    use std::io::{Read as _, Write as _};
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    stream.write_all(b"GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .ok_or(AdminError::NoBody)?;
    Ok(serde_json::from_str(body)?)
}
