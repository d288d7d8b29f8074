//! Resolving one hostname: A and AAAA, CNAME chains followed across queries, servers tried in
//! order. Hostnames are absolute: there is no search-list expansion.

use std::{collections::BTreeMap, net::IpAddr, net::SocketAddr, time::Duration};

use hickory_proto::rr::{Name, RecordType};

use super::query::{QueryError, Reply, query};

/// Longest CNAME chain followed.
const MAX_CHAIN: usize = 8;
/// TTL assumed for a negative answer without an SOA.
const DEFAULT_NEGATIVE_TTL: u32 = 30;

/// A real answer for a hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Addresses with their TTLs (each the smallest TTL along its CNAME chain).
    Addresses(BTreeMap<IpAddr, u32>),
    /// The name does not exist; retry after the TTL.
    NxDomain(u32),
    /// The name exists but has no A or AAAA records; retry after the TTL.
    NoData(u32),
}

/// Resolves `host` against `servers` (in order; the next one is tried when one fails).
pub async fn resolve(
    servers: &[SocketAddr],
    host: &str,
    timeout: Duration,
) -> Result<Resolution, QueryError> {
    let absolute = if host.ends_with('.') {
        host.to_owned()
    } else {
        format!("{host}.")
    };
    let name = Name::from_ascii(&absolute)
        .map_err(|err| QueryError::Exchange(format!("{host:?}: {err}")))?;
    let mut last_error = QueryError::Exchange("no DNS servers configured".into());
    for server in servers {
        let (v4, v6) = tokio::join!(
            follow(*server, &name, RecordType::A, timeout),
            follow(*server, &name, RecordType::AAAA, timeout)
        );
        match (v4, v6) {
            (Ok(v4), Ok(v6)) => return Ok(combine(&v4, &v6)),
            // One family failed: the other's addresses are a real, if partial, answer (a server
            // that breaks AAAA must not keep a host unresolved). Without addresses the failure
            // decides, so nothing ages out on a half answer.
            (Ok(answered), Err(err)) | (Err(err), Ok(answered)) => {
                if !answered.addresses.is_empty() {
                    return Ok(combine(&answered, &Family::default()));
                }
                last_error = err;
            }
            (Err(err), Err(_)) => last_error = err,
        }
    }
    Err(last_error)
}

/// The outcome for one record type.
#[derive(Debug, Clone, Default)]
struct Family {
    addresses: Vec<(IpAddr, u32)>,
    nxdomain: bool,
    negative_ttl: Option<u32>,
}

async fn follow(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Family, QueryError> {
    let mut name = name.clone();
    let mut chain_ttl = u32::MAX;
    for _ in 0..MAX_CHAIN {
        let Reply {
            addresses,
            cnames,
            final_name,
            nxdomain,
            negative_ttl,
        } = query(server, &name, rtype, timeout).await?;
        chain_ttl = cnames.iter().map(|(_, ttl)| *ttl).fold(chain_ttl, u32::min);
        if nxdomain || !addresses.is_empty() || cnames.is_empty() {
            return Ok(Family {
                addresses: addresses
                    .into_iter()
                    .map(|(addr, ttl)| (addr, ttl.min(chain_ttl)))
                    .collect(),
                nxdomain,
                negative_ttl: negative_ttl.map(|ttl| ttl.min(chain_ttl)),
            });
        }
        // The answer ended at a CNAME target without its records: ask for the target.
        match final_name {
            Some(next) if next != name => name = next,
            _ => break,
        }
    }
    Err(QueryError::Exchange(format!(
        "CNAME chain longer than {MAX_CHAIN} or looping"
    )))
}

fn combine(v4: &Family, v6: &Family) -> Resolution {
    let mut addresses = BTreeMap::new();
    for (addr, ttl) in v4.addresses.iter().chain(&v6.addresses) {
        let entry = addresses.entry(*addr).or_insert(*ttl);
        *entry = (*entry).min(*ttl);
    }
    if !addresses.is_empty() {
        return Resolution::Addresses(addresses);
    }
    let ttl = v4
        .negative_ttl
        .or(v6.negative_ttl)
        .unwrap_or(DEFAULT_NEGATIVE_TTL);
    if v4.nxdomain || v6.nxdomain {
        Resolution::NxDomain(ttl)
    } else {
        Resolution::NoData(ttl)
    }
}

/// The name servers in a resolv.conf text (`nameserver` lines), on port 53.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
