//! One agent in the cluster writes policy status and cluster-wide Events: the holder of a
//! Lease in the agent's namespace. Holding it is renewed every few seconds with optimistic
//! concurrency (a stale `resourceVersion` loses), and taken over when its holder stops
//! renewing, so a failed node hands the job on within [`LEASE_SECONDS`].

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// The Lease's name.
pub const LEASE_NAME: &str = "egress-agent-status-writer";
/// How long a holder that stopped renewing keeps it.
pub const LEASE_SECONDS: i32 = 15;
/// How often the holder renews (and others check).
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Starts competing for the Lease as `identity`; the receiver says whether this agent holds
/// it now.
pub fn elect(client: Client, namespace: &str, identity: String) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, namespace);
    tokio::spawn(async move {
        let mut last_renewed: Option<tokio::time::Instant> = None;
        loop {
            let held = match attempt(&api, &identity).await {
                Ok(held) => {
                    if held {
                        last_renewed = Some(tokio::time::Instant::now());
                    }
                    held
                }
                Err(err) => {
                    warn!(error = %err, lease = LEASE_NAME, "cannot read or renew the status Lease");
                    // Keep writing while the Lease cannot have passed to anyone else.
                    *tx.borrow()
                        && last_renewed.is_some_and(|at| {
                            at.elapsed()
                                < Duration::from_secs(LEASE_SECONDS.unsigned_abs().into())
                                    .saturating_sub(RENEW_EVERY)
                        })
                }
            };
            if *tx.borrow() != held {
                info!(
                    holder = held,
                    lease = LEASE_NAME,
                    "status writer {}",
                    if held {
                        "elected: this agent writes policy status and Events"
                    } else {
                        "is another agent"
                    }
                );
                if tx.send(held).is_err() {
                    return;
                }
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
    });
    rx
}

/// One round: create, renew or take over the Lease; `Ok(true)` when this agent holds it.
async fn attempt(api: &Api<Lease>, identity: &str) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.to_owned()),
                lease_duration_seconds: Some(LEASE_SECONDS),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return lost_on_conflict(api.create(&PostParams::default(), &lease).await);
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let mine = spec.holder_identity.as_deref() == Some(identity);
    let duration = spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS);
    let expired = spec
        .renew_time
        .as_ref()
        .is_none_or(|renewed| renewed.0 + SignedDuration::from_secs(duration.into()) < now);
    if !mine && !expired {
        return Ok(false);
    }
    if !mine {
        spec.holder_identity = Some(identity.to_owned());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(LEASE_SECONDS);
    spec.renew_time = Some(MicroTime(now));
    // `replace` sends the resourceVersion read above: a concurrent writer makes it fail.
    lost_on_conflict(
        api.replace(LEASE_NAME, &PostParams::default(), &lease)
            .await,
    )
}

fn lost_on_conflict(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}
