//! One agent in the cluster writes policy status and cluster-wide Events: the holder of a
//! Lease in the agent's namespace. Holding it is renewed every few seconds with optimistic
//! concurrency (a stale `resourceVersion` loses), and taken over when its holder stops
//! renewing, so a failed node hands the job on within [`LEASE_SECONDS`] + [`CHECK_EVERY`].
//!
//! Every node runs an agent, so what each costs the API server is multiplied by the nodes: the
//! holder renews with one request (an update of the Lease it last wrote), and the others read
//! the Lease only every [`CHECK_EVERY`]: 12 and 2 requests a minute.

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
/// How often the holder renews.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often the others check whether the holder stopped renewing.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);

/// Starts competing for the Lease as `identity`; the receiver says whether this agent holds
/// it now.
pub fn elect(client: Client, namespace: &str, identity: String) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, namespace);
    tokio::spawn(async move {
        let mut last_renewed: Option<tokio::time::Instant> = None;
        // The Lease as this agent last wrote it, while it holds it.
        let mut written: Option<Lease> = None;
        loop {
            let outcome = attempt(&api, &identity, written.take()).await;
            // A lost race is read again soon; otherwise only the holder comes back quickly.
            let mut next = CHECK_EVERY;
            let held = match outcome {
                Ok(Attempt::Held(lease)) => {
                    last_renewed = Some(tokio::time::Instant::now());
                    written = Some(*lease);
                    next = RENEW_EVERY;
                    true
                }
                Ok(Attempt::HeldByAnother) => false,
                Ok(Attempt::Conflict) => {
                    next = RENEW_EVERY;
                    false
                }
                Err(err) => {
                    warn!(error = %err, lease = LEASE_NAME, "cannot read or renew the status Lease");
                    next = RENEW_EVERY;
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
            tokio::time::sleep(next).await;
        }
    });
    rx
}

/// What one round found.
enum Attempt {
    /// This agent holds the Lease, as written.
    Held(Box<Lease>),
    /// Another agent holds it and renews it.
    HeldByAnother,
    /// Someone else wrote it since it was read.
    Conflict,
}

/// One round: create, renew or take over the Lease. `written`, the Lease as this agent last
/// wrote it, is renewed without reading it first.
async fn attempt(
    api: &Api<Lease>,
    identity: &str,
    written: Option<Lease>,
) -> Result<Attempt, kube::Error> {
    let now = Timestamp::now();
    let lease = match written {
        Some(lease) => Some(lease),
        None => api.get_opt(LEASE_NAME).await?,
    };
    let Some(mut lease) = lease else {
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
        return Ok(Attempt::HeldByAnother);
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

fn lost_on_conflict(result: Result<Lease, kube::Error>) -> Result<Attempt, kube::Error> {
    match result {
        Ok(lease) => Ok(Attempt::Held(Box::new(lease))),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Conflict),
        Err(err) => Err(err),
    }
}
