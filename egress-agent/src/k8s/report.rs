//! Telling people what happened: Events on a policy when a problem appears, and the
//! node-independent `Accepted` / `ResolvedRefs` conditions, written by server-side apply only
//! when they differ from what the policy already says (so every node computes the same and
//! writes nothing when it is unchanged).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use tracing::{info, warn};

use crate::{
    dns::Health,
    engine::Facts,
    intent::{PolicyKey, RuleOwner},
};

use super::{
    crd::EgressRedirectPolicy,
    index::{ClusterState, Index, PolicyOutcome, Problem, Verdict},
    model::{ConditionState, ObjectKey},
};

/// The field manager of the status writes.
const MANAGER: &str = "egress-agent";

/// Publishes Events and status for policy outcomes.
pub struct PolicyReporter {
    client: Client,
    recorder: Recorder,
    /// Problems already reported, per policy.
    reported: BTreeMap<ObjectKey, BTreeSet<Problem>>,
    /// Conflicts and hostname troubles already reported (a key per fact).
    noticed: BTreeSet<String>,
}

impl PolicyReporter {
    /// A reporter for this node.
    pub fn new(client: Client, node: &str) -> Self {
        let reporter = Reporter {
            controller: "egress-agent".into(),
            instance: Some(node.to_owned()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            reported: BTreeMap::new(),
            noticed: BTreeSet::new(),
        }
    }

    /// Reports what changed since the last call; the API calls run in the background.
    pub fn report(&mut self, index: &Index, state: &ClusterState) {
        let live: BTreeSet<&ObjectKey> = state.outcomes.iter().map(|o| &o.key).collect();
        self.reported.retain(|key, _| live.contains(key));
        for outcome in &state.outcomes {
            let Some(policy) = index.policies.get(&outcome.key) else {
                continue;
            };
            let known = self.reported.entry(outcome.key.clone()).or_default();
            let new: Vec<Problem> = outcome
                .problems
                .iter()
                .filter(|p| !known.contains(*p))
                .cloned()
                .collect();
            *known = outcome.problems.iter().cloned().collect();
            let wanted = conditions(outcome);
            let current: Vec<ConditionState> = policy.conditions.clone();
            let transitions = policy.transitions.clone();
            let status_changed = !same_conditions(&wanted, &current);
            if new.is_empty() && !status_changed {
                continue;
            }
            let client = self.client.clone();
            let recorder = self.recorder.clone();
            let key = outcome.key.clone();
            tokio::spawn(async move {
                for problem in new {
                    publish(&recorder, &key, &problem).await;
                }
                if status_changed {
                    write_status(client, &key, &wanted, &current, &transitions).await;
                }
            });
        }
    }
}

impl PolicyReporter {
    /// Reports, once each, conflicts (on the losing policy) and hostnames that do not resolve
    /// (on every policy naming them).
    pub fn report_runtime(&mut self, facts: &Facts, state: &ClusterState) {
        let mut found: Vec<(String, ObjectKey, Problem)> = Vec::new();
        for conflict in &facts.conflicts {
            if let RuleOwner::Policy(loser) = &conflict.loser {
                let fact = format!(
                    "conflict {} {} {} {}",
                    conflict.destination, conflict.port, conflict.protocol, conflict.winner
                );
                let message = format!(
                    "{} port {}/{} is also claimed by {} with another gateway for the same pods; the older policy wins",
                    conflict.destination, conflict.port, conflict.protocol, conflict.winner
                );
                found.push((fact, object_key(loser), Problem::Conflict(message)));
            }
        }
        for host in facts.hosts.iter().filter(|h| {
            matches!(h.state, Health::NxDomain | Health::NoData)
                || (h.state == Health::Pending && h.last_error.is_some())
        }) {
            let state_name = crate::status::health_name(host.state);
            for rule in state.rules.iter().filter(|r| r.hosts.contains(&host.name)) {
                if let RuleOwner::Policy(key) = &rule.owner {
                    let fact = format!("host {} {state_name} {key}", host.name);
                    let why = host
                        .last_error
                        .clone()
                        .unwrap_or_else(|| state_name.to_owned());
                    found.push((
                        fact,
                        object_key(key),
                        Problem::Unresolvable(format!(
                            "hostname {} does not resolve: {why}",
                            host.name
                        )),
                    ));
                }
            }
        }
        let current: BTreeSet<String> = found.iter().map(|(fact, _, _)| fact.clone()).collect();
        let fresh: Vec<(ObjectKey, Problem)> = found
            .into_iter()
            .filter(|(fact, _, _)| !self.noticed.contains(fact))
            .map(|(_, key, problem)| (key, problem))
            .collect();
        self.noticed = current;
        for (key, problem) in fresh {
            let recorder = self.recorder.clone();
            tokio::spawn(async move { publish(&recorder, &key, &problem).await });
        }
    }
}

fn object_key(key: &PolicyKey) -> ObjectKey {
    (key.namespace.clone(), key.name.clone())
}

async fn publish(recorder: &Recorder, key: &ObjectKey, problem: &Problem) {
    let reference = ObjectReference {
        api_version: Some("egress-agent.io/v1alpha1".into()),
        kind: Some("EgressRedirectPolicy".into()),
        namespace: Some(key.0.clone()),
        name: Some(key.1.clone()),
        ..ObjectReference::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: problem.reason().into(),
        note: Some(problem.message()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, &reference).await {
        warn!(policy = %format!("{}/{}", key.0, key.1), error = %err, "cannot publish Event");
    }
}

/// The conditions an outcome calls for.
fn conditions(outcome: &PolicyOutcome) -> Vec<ConditionState> {
    let condition = |type_: &str, verdict: &Verdict| ConditionState {
        type_: type_.to_owned(),
        status: if verdict.ok { "True" } else { "False" }.to_owned(),
        reason: verdict.reason.clone(),
        message: verdict.message.clone(),
        observed_generation: outcome.generation,
    };
    vec![
        condition("Accepted", &outcome.accepted),
        condition("ResolvedRefs", &outcome.resolved_refs),
    ]
}

fn same_conditions(wanted: &[ConditionState], current: &[ConditionState]) -> bool {
    wanted.iter().all(|w| current.contains(w)) && current.len() == wanted.len()
}

async fn write_status(
    client: Client,
    key: &ObjectKey,
    wanted: &[ConditionState],
    current: &[ConditionState],
    transitions: &BTreeMap<String, String>,
) {
    let now = Time(Timestamp::now());
    let conditions: Vec<Condition> = wanted
        .iter()
        .map(|w| {
            // The transition time moves only when the status flips.
            let kept = current
                .iter()
                .any(|c| c.type_ == w.type_ && c.status == w.status)
                .then(|| {
                    transitions
                        .get(&w.type_)
                        .and_then(|t| t.parse::<Timestamp>().ok())
                })
                .flatten();
            Condition {
                type_: w.type_.clone(),
                status: w.status.clone(),
                reason: w.reason.clone(),
                message: w.message.clone(),
                observed_generation: Some(w.observed_generation),
                last_transition_time: kept.map_or_else(|| now.clone(), Time),
            }
        })
        .collect();
    let patch = serde_json::json!({
        "apiVersion": "egress-agent.io/v1alpha1",
        "kind": "EgressRedirectPolicy",
        "status": { "conditions": conditions },
    });
    let api: Api<EgressRedirectPolicy> = Api::namespaced(client, &key.0);
    match api
        .patch_status(
            &key.1,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => info!(policy = %format!("{}/{}", key.0, key.1), "status updated"),
        Err(err) => {
            warn!(policy = %format!("{}/{}", key.0, key.1), error = %err, "cannot write status");
        }
    }
}
