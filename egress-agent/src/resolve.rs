//! Hostname resolution, simple for now: the system resolver, refreshed on every resync, with
//! the last good answer kept while a lookup fails.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use tracing::warn;

/// The last known addresses of each hostname.
#[derive(Debug, Default)]
pub struct Resolver {
    known: BTreeMap<String, BTreeSet<IpAddr>>,
}

impl Resolver {
    /// Resolves `hosts`, forgets hosts no longer wanted, and returns the addresses.
    pub async fn refresh(
        &mut self,
        hosts: &BTreeSet<String>,
    ) -> &BTreeMap<String, BTreeSet<IpAddr>> {
        self.known.retain(|host, _| hosts.contains(host));
        for host in hosts {
            let lookup = tokio::net::lookup_host((host.as_str(), 0));
            match tokio::time::timeout(Duration::from_secs(3), lookup).await {
                Ok(Ok(addrs)) => {
                    let addrs: BTreeSet<IpAddr> = addrs.map(|sa| sa.ip()).collect();
                    self.known.insert(host.clone(), addrs);
                }
                Ok(Err(err)) => {
                    warn!(host, error = %err, "cannot resolve; keeping the last answer");
                }
                Err(_) => warn!(host, "resolution timed out; keeping the last answer"),
            }
        }
        &self.known
    }
}
