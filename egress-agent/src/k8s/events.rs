//! Kubernetes Events, once per fact for the whole cluster.
//!
//! An Event's name is derived from the object's UID and the fact (reason and message), so a
//! second agent, or this one after a restart, that reports the same fact gets
//! `409 AlreadyExists` and stops there. Events reference the object's UID, which is how
//! `kubectl describe` finds them. A failed create is retried with backoff.

use std::time::Duration;

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tracing::{debug, warn};

/// `reportingController` of every Event.
const CONTROLLER: &str = "egress-agent.io/agent";
/// Attempts per Event.
const ATTEMPTS: u32 = 5;

/// What an Event is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Regarding {
    /// `egress-agent.io/v1alpha1`, `v1`.
    pub api_version: String,
    /// `EgressRedirectPolicy`, `Pod`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

/// One fact worth an Event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fact {
    /// The object.
    pub regarding: Regarding,
    /// Reason (CamelCase).
    pub reason: String,
    /// A sentence.
    pub note: String,
}

impl Fact {
    /// The Event's name: the object's name and a hash of its UID and the fact (FNV-1a, the
    /// same in every agent version).
    pub fn event_name(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for part in [&self.regarding.uid, &self.reason, &self.note] {
            for byte in part.bytes().chain([0]) {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        let name: String = self.regarding.name.chars().take(200).collect();
        format!("{name}.{hash:016x}")
    }

    fn event(&self, node: &str) -> Event {
        let regarding = &self.regarding;
        Event {
            metadata: ObjectMeta {
                name: Some(self.event_name()),
                namespace: Some(regarding.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(Timestamp::now())),
            type_: Some("Warning".to_owned()),
            reason: Some(self.reason.clone()),
            note: Some(self.note.clone()),
            action: Some("Reconcile".to_owned()),
            reporting_controller: Some(CONTROLLER.to_owned()),
            reporting_instance: Some(format!("{CONTROLLER}/{node}")),
            regarding: Some(ObjectReference {
                api_version: Some(regarding.api_version.clone()),
                kind: Some(regarding.kind.clone()),
                namespace: Some(regarding.namespace.clone()),
                name: Some(regarding.name.clone()),
                uid: Some(regarding.uid.clone()),
                ..ObjectReference::default()
            }),
            ..Event::default()
        }
    }
}

/// Creates the Event for `fact` unless it exists, retrying failures with backoff. Returns
/// whether the fact is now recorded (created, or already there).
pub async fn publish(client: Client, node: &str, fact: &Fact) -> bool {
    let api: Api<Event> = Api::namespaced(client, &fact.regarding.namespace);
    let event = fact.event(node);
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                debug!(reason = fact.reason, object = %fact.regarding.name, "Event created");
                return true;
            }
            Err(kube::Error::Api(status)) if status.code == 409 => return true,
            Err(err) if attempt < ATTEMPTS => {
                debug!(error = %err, attempt, "cannot create Event; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(err) => {
                warn!(error = %err, reason = fact.reason, object = %fact.regarding.name, "cannot create Event");
            }
        }
    }
    false
}
