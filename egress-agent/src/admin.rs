//! The agent's HTTP endpoints (hyper, HTTP/1, GET only, with read timeouts):
//!
//! * admin, on localhost by default: `/status` (what `egress-agent status` shows), `/live`,
//!   `/ready`, `/metrics`;
//! * metrics, on the pod IP in a cluster: `/metrics` (`OpenMetrics`), `/live`, `/ready`, read
//!   only, so the kubelet's probes and Prometheus reach it and nothing can change state.
//!
//! `/ready` answers 200 once the programs are attached and a valid intent is in force; `/live`
//! fails when an internal task is stuck or ended (see `health.rs`).

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::{bpffs::PinDir, engine::StatusHandle, health::Health, metrics, status::StatusDocument};

/// Default address of the admin endpoint.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9901";
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may last.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Which endpoint a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/status`, `/live`, `/ready`, `/metrics`.
    Admin,
    /// `/metrics`, `/live`, `/ready`.
    Metrics,
}

/// What the endpoints read.
#[derive(Clone, Debug)]
pub struct Sources {
    /// The engine's status.
    pub status: StatusHandle,
    /// Task heartbeats.
    pub health: Health,
    /// The pinned maps, for the datapath metrics.
    pub pins: PinDir,
}

/// Serves `endpoint` on `listener` forever.
pub async fn serve(listener: TcpListener, endpoint: Endpoint, sources: Sources) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, ?endpoint, "HTTP endpoint listening");
    }
    let sources = Arc::new(sources);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let sources = Arc::clone(&sources);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let sources = Arc::clone(&sources);
                async move { Ok::<_, Infallible>(respond(&request, endpoint, &sources)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => debug!(%peer, error = %err, "HTTP connection failed"),
                Err(_) => debug!(%peer, "HTTP connection timed out"),
            }
        });
    }
}

fn respond(
    request: &Request<Incoming>,
    endpoint: Endpoint,
    sources: &Sources,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".to_owned(),
        );
    }
    match (request.uri().path(), endpoint) {
        ("/live" | "/healthz", _) => {
            let problems = sources.health.problems();
            if problems.is_empty() {
                reply(StatusCode::OK, "text/plain", "ok\n".to_owned())
            } else {
                let body = format!("stuck: {}\n", problems.join("; "));
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", body)
            }
        }
        ("/ready", _) if sources.status.ready() => {
            reply(StatusCode::OK, "text/plain", "ready\n".to_owned())
        }
        ("/ready", _) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".to_owned(),
        ),
        ("/metrics", _) => {
            let text = metrics::render(Some(metrics::Datapath::new(sources.pins.clone())));
            // Prometheus asks for OpenMetrics; anything else gets the classic format.
            let openmetrics = request
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|accept| accept.contains("application/openmetrics-text"));
            if openmetrics {
                reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                )
            } else {
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics::to_prometheus_text(&text),
                )
            }
        }
        ("/status", Endpoint::Admin) => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&sources.status.document()).unwrap_or_default(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            match endpoint {
                Endpoint::Admin => "try /status, /live, /ready or /metrics\n",
                Endpoint::Metrics => "try /metrics, /live or /ready\n",
            }
            .to_owned(),
        ),
    }
}

fn reply(code: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// Fetches `/status` from a running agent (blocking; for the CLI).
pub fn fetch_status(addr: std::net::SocketAddr) -> Result<StatusDocument, AdminError> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .ok_or(AdminError::NoBody)?;
    Ok(serde_json::from_str(body)?)
}
