//! Telling people what happened.
//!
//! * Policy status (`Accepted`, `ResolvedRefs`, `FailClosed`, and the defaults taken from the
//!   target) and policy Events are written by one agent: the holder of the status Lease. It
//!   writes a status only when it differs from what the policy already says.
//! * Events about this node's pods (a selected pod whose cgroup is not found) are this node's.
//!
//! Every Event is created once per fact for the whole cluster (see `events.rs`).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, PoisonError},
};

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use tracing::{info, warn};

use super::{
    convert::policy_port,
    crd::{EgressRedirectPolicy, StatusDefaults},
    events::{self, Fact, Regarding},
    index::{ClusterState, Index, PodRef},
    model::{ConditionState, Defaults, ObjectKey, PolicyInfo},
    policy::{PolicyOutcome, Problem, Verdict, verdict},
};
use crate::{
    dns::Health,
    engine::Facts,
    intent::{PolicyKey, RuleOwner},
};

/// The field manager of the status writes.
const MANAGER: &str = "egress-agent";
/// The policy API version.
const POLICY_API: &str = "egress-agent.io/v1alpha1";

/// Publishes Events and status.
pub struct PolicyReporter {
    client: Client,
    node: String,
    /// Facts whose Event exists or is being created.
    recorded: Arc<Mutex<BTreeSet<Fact>>>,
}

impl PolicyReporter {
    /// A reporter for this node.
    pub fn new(client: Client, node: &str) -> Self {
        Self {
            client,
            node: node.to_owned(),
            recorded: Arc::default(),
        }
    }

    /// As the status writer: writes every policy status that differs from what it should be,
    /// and creates the Events for the policies' problems, static and found at runtime.
    pub fn report(&self, index: &Index, state: &ClusterState, facts: &Facts) {
        let runtime = runtime_problems(facts, state);
        let mut policy_facts = Vec::new();
        for outcome in &state.outcomes {
            let Some(policy) = index.policies.get(&outcome.key) else {
                continue;
            };
            let unresolvable = runtime.get(&outcome.key).cloned().unwrap_or_default();
            for problem in outcome.problems.iter().chain(&unresolvable) {
                policy_facts.push(policy_fact(policy, problem));
            }
            let wanted = conditions(outcome, &unresolvable);
            let defaults = outcome.defaults.clone().or_else(|| policy.kept.clone());
            if same_conditions(&wanted, &policy.conditions) && defaults == policy.kept {
                continue;
            }
            let client = self.client.clone();
            let key = outcome.key.clone();
            let current = policy.conditions.clone();
            let transitions = policy.transitions.clone();
            tokio::spawn(async move {
                write_status(client, &key, &wanted, &current, &transitions, defaults).await;
            });
        }
        self.publish_all(policy_facts);
    }

    /// Creates an Event on each of this node's pods whose cgroup is not found.
    pub fn report_missing_cgroups(&self, pods: &[(PodRef, String)]) {
        let facts = pods
            .iter()
            .map(|(pod, api_uid)| Fact {
                regarding: Regarding {
                    api_version: "v1".to_owned(),
                    kind: "Pod".to_owned(),
                    namespace: pod.key.0.clone(),
                    name: pod.key.1.clone(),
                    uid: api_uid.clone(),
                },
                reason: "PodCgroupNotFound".to_owned(),
                note: format!(
                    "egress-agent on node {} found no cgroup for this selected pod (kubelet UID {}), so its connections are not redirected; see the agent's --cgroup-root and docs on cgroup layouts",
                    self.node, pod.uid
                ),
            })
            .collect();
        self.publish_all(facts);
    }

    fn publish_all(&self, facts: Vec<Fact>) {
        let fresh: Vec<Fact> = {
            let mut recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
            facts
                .into_iter()
                .filter(|fact| recorded.insert(fact.clone()))
                .collect()
        };
        for fact in fresh {
            let client = self.client.clone();
            let node = self.node.clone();
            let recorded = Arc::clone(&self.recorded);
            tokio::spawn(async move {
                if !events::publish(client, &node, &fact).await {
                    // Not recorded: the next report tries again.
                    recorded
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&fact);
                }
            });
        }
    }
}

fn policy_fact(policy: &PolicyInfo, problem: &Problem) -> Fact {
    Fact {
        regarding: Regarding {
            api_version: POLICY_API.to_owned(),
            kind: "EgressRedirectPolicy".to_owned(),
            namespace: policy.namespace.clone(),
            name: policy.name.clone(),
            uid: policy.uid.clone(),
        },
        reason: problem.reason().to_owned(),
        note: problem.message(),
    }
}

/// Problems the engine found at runtime, by policy: conflicts (on the losing policy) and
/// hostnames that do not resolve (on every policy naming them).
fn runtime_problems(facts: &Facts, state: &ClusterState) -> BTreeMap<ObjectKey, Vec<Problem>> {
    let mut found: BTreeMap<ObjectKey, Vec<Problem>> = BTreeMap::new();
    for conflict in &facts.conflicts {
        if let RuleOwner::Policy(loser) = &conflict.loser {
            let message = format!(
                "{} port {}/{} is also claimed by {} with another gateway for the same pods; the older policy wins",
                conflict.destination, conflict.port, conflict.protocol, conflict.winner
            );
            found
                .entry(object_key(loser))
                .or_default()
                .push(Problem::Conflict(message));
        }
    }
    for host in facts.hosts.iter().filter(|h| {
        matches!(h.state, Health::NxDomain | Health::NoData)
            || (h.state == Health::Pending && h.last_error.is_some())
    }) {
        let state_name = crate::status::health_name(host.state);
        let why = host
            .last_error
            .clone()
            .unwrap_or_else(|| state_name.to_owned());
        for rule in state.rules.iter().filter(|r| r.hosts.contains(&host.name)) {
            if let RuleOwner::Policy(key) = &rule.owner {
                found
                    .entry(object_key(key))
                    .or_default()
                    .push(Problem::Unresolvable(format!(
                        "hostname {} does not resolve: {why}",
                        host.name
                    )));
            }
        }
    }
    found
}

fn object_key(key: &PolicyKey) -> ObjectKey {
    (key.namespace.clone(), key.name.clone())
}

/// The conditions an outcome calls for, with the runtime problems of its policy.
fn conditions(outcome: &PolicyOutcome, runtime: &[Problem]) -> Vec<ConditionState> {
    let condition = |type_: &str, verdict: &Verdict| ConditionState {
        type_: type_.to_owned(),
        status: if verdict.ok { "True" } else { "False" }.to_owned(),
        reason: verdict.reason.clone(),
        message: verdict.message.clone(),
        observed_generation: outcome.generation,
    };
    let mut conditions = vec![
        condition("Accepted", &outcome.accepted),
        condition("ResolvedRefs", &outcome.resolved_refs),
    ];
    if let Some(fail_closed) = &outcome.fail_closed {
        let unresolvable = runtime.iter().find_map(|p| match p {
            Problem::Unresolvable(message) => Some(message),
            _ => None,
        });
        let fail_closed = match unresolvable {
            Some(message) if !fail_closed.ok && outcome.accepted.ok => verdict(
                true,
                "HostnameUnresolvable",
                &format!(
                    "{message}: its last addresses stay routed and addresses pods learn from their own answers are redirected; none go direct"
                ),
            ),
            _ => fail_closed.clone(),
        };
        conditions.push(condition("FailClosed", &fail_closed));
    }
    conditions
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
    defaults: Option<Defaults>,
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
    let defaults = defaults.map(|d| StatusDefaults {
        hostnames: d.hostnames,
        ports: d.ports.iter().map(policy_port).collect(),
    });
    let patch = serde_json::json!({
        "apiVersion": POLICY_API,
        "kind": "EgressRedirectPolicy",
        "status": { "conditions": conditions, "defaults": defaults },
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
