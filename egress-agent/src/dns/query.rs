//! One DNS exchange on the wire: a query over UDP (TCP when the answer is truncated), decoded
//! with hickory-proto, classified into what the engine needs.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpStream, UdpSocket},
};

/// A query that got no usable answer; the name's state does not change meaning (transient).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No answer within the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The server answered with an error code other than NXDOMAIN (SERVFAIL, REFUSED, ...).
    #[error("server answered {0}")]
    Server(String),
    /// The exchange failed (socket error, malformed answer).
    #[error("{0}")]
    Exchange(String),
}

/// What one query for one type returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Reply {
    /// Addresses of the queried name (after any CNAME chain in the answer), with TTLs.
    pub addresses: Vec<(IpAddr, u32)>,
    /// CNAMEs followed, with their TTLs, in order.
    pub cnames: Vec<(Name, u32)>,
    /// The name the answer ends at (the query name, or the last CNAME target).
    pub final_name: Option<Name>,
    /// NXDOMAIN.
    pub nxdomain: bool,
    /// TTL for a negative answer (from the SOA in the authority section).
    pub negative_ttl: Option<u32>,
}

/// Sends one query for `name`/`rtype` to `server`.
pub(super) async fn query(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Reply, QueryError> {
    let mut message = Message::query();
    message.add_query(Query::query(name.clone(), rtype));
    message.metadata.recursion_desired = true;
    let id = message.metadata.id;
    let wire = message
        .to_vec()
        .map_err(|err| QueryError::Exchange(err.to_string()))?;
    let exchange = async {
        let mut response = udp_exchange(server, &wire, id).await?;
        if response.metadata.truncation {
            response = tcp_exchange(server, &wire).await?;
        }
        Ok::<Message, QueryError>(response)
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| QueryError::Timeout(timeout))??;
    classify(name, &response)
}

async fn udp_exchange(server: SocketAddr, wire: &[u8], id: u16) -> Result<Message, QueryError> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()
    } else {
        "[::]:0".parse()
    }
    .map_err(|_| QueryError::Exchange("bind address".into()))?;
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|err| QueryError::Exchange(err.to_string()))?;
    socket
        .connect(server)
        .await
        .map_err(|err| QueryError::Exchange(err.to_string()))?;
    socket
        .send(wire)
        .await
        .map_err(|err| QueryError::Exchange(err.to_string()))?;
    let mut buf = vec![0; 4096];
    loop {
        let len = socket
            .recv(&mut buf)
            .await
            .map_err(|err| QueryError::Exchange(err.to_string()))?;
        let Ok(message) = Message::from_vec(&buf[..len]) else {
            continue;
        };
        // Ignore stray datagrams; only our id counts.
        if message.metadata.id == id {
            return Ok(message);
        }
    }
}

async fn tcp_exchange(server: SocketAddr, wire: &[u8]) -> Result<Message, QueryError> {
    let io = |err: std::io::Error| QueryError::Exchange(err.to_string());
    let mut stream = TcpStream::connect(server).await.map_err(io)?;
    let len =
        u16::try_from(wire.len()).map_err(|_| QueryError::Exchange("query too long".into()))?;
    stream.write_all(&len.to_be_bytes()).await.map_err(io)?;
    stream.write_all(wire).await.map_err(io)?;
    let mut len = [0; 2];
    stream.read_exact(&mut len).await.map_err(io)?;
    let mut buf = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.map_err(io)?;
    Message::from_vec(&buf).map_err(|err| QueryError::Exchange(err.to_string()))
}

/// Turns a response into a [`Reply`], following CNAMEs inside the answer section.
fn classify(name: &Name, response: &Message) -> Result<Reply, QueryError> {
    let code = response.metadata.response_code;
    let negative_ttl = response
        .authorities
        .iter()
        .find_map(|record| match &record.data {
            RData::SOA(soa) => Some(record.ttl.min(soa.minimum)),
            _ => None,
        });
    match code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => {
            return Ok(Reply {
                nxdomain: true,
                negative_ttl,
                ..Reply::default()
            });
        }
        other => return Err(QueryError::Server(other.to_string())),
    }
    let mut reply = Reply {
        negative_ttl,
        ..Reply::default()
    };
    let mut current = name.to_lowercase();
    // Follow the chain within the answer; bounded by the answer's size.
    for _ in 0..=response.answers.len() {
        let next = response
            .answers
            .iter()
            .find_map(|record| match &record.data {
                RData::CNAME(target) if record.name.to_lowercase() == current => {
                    Some((target.0.to_lowercase(), record.ttl))
                }
                _ => None,
            });
        match next {
            Some((target, ttl)) => {
                reply.cnames.push((target.clone(), ttl));
                current = target;
            }
            None => break,
        }
    }
    for record in &response.answers {
        if record.name.to_lowercase() != current {
            continue;
        }
        match &record.data {
            RData::A(a) => reply.addresses.push((IpAddr::V4(a.0), record.ttl)),
            RData::AAAA(aaaa) => reply.addresses.push((IpAddr::V6(aaaa.0), record.ttl)),
            _ => {}
        }
    }
    reply.final_name = Some(current);
    Ok(reply)
}
