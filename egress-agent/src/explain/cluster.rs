//! The Kubernetes half of `explain`: the pod, its namespace and every policy, read from the
//! API and judged by the agent's own index, then the pod's cgroup on this node.

use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams},
};

use super::{ExplainError, Explanation, HostPort, PodLine, PolicyLine, explain_cgroup};
use crate::{
    bpffs::PinDir,
    cgroupfs::Hierarchy,
    k8s::{
        cgroups::PodCgroups,
        convert::{self, key_of},
        crd::{EgressRedirectPolicy, GATEWAY_GROUP},
        index::{ENVOY_GATEWAY_NAME_LABEL, GATEWAY_NAME_LABEL, Index, IndexSettings},
        model::PolicyInfo,
    },
};

/// Explains the pod `target` (`namespace/name`).
pub async fn explain_pod(
    client: Client,
    settings: IndexSettings,
    pins: &PinDir,
    hierarchy: &Hierarchy,
    target: &str,
    host: Option<&HostPort>,
    dns_servers: &[std::net::SocketAddr],
) -> Result<Explanation, ExplainError> {
    let (namespace, name) = target
        .split_once('/')
        .ok_or_else(|| ExplainError::Pod(format!("{target:?}: use namespace/pod")))?;
    let pod = Api::<Pod>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?
        .ok_or_else(|| ExplainError::Pod(format!("pod {target} not found")))?;
    let pod = convert::pod(&pod);
    let index = fetch(client, settings, &pod).await?;
    let namespace_labels = index
        .namespaces
        .get(&(String::new(), namespace.to_owned()))
        .map(|n| n.labels.clone())
        .unwrap_or_default();
    let mut policies: Vec<&PolicyInfo> = index.policies.values().collect();
    policies.sort_by(|a, b| {
        (&a.created, &a.namespace, &a.name).cmp(&(&b.created, &b.namespace, &b.name))
    });
    let lines = policies
        .iter()
        .map(|policy| judge(&index, policy, &pod))
        .collect();
    let cgroups = PodCgroups::scan(&[hierarchy.mount().to_owned()]);
    let paths = cgroups.of(&pod.cgroup_uid, &pod.container_ids);
    let mut explanation = match paths.first() {
        Some(path) => explain_cgroup(pins, hierarchy, path, host, dns_servers).await?,
        None => Explanation::default(),
    };
    explanation.pod = Some(PodLine {
        name: target.to_owned(),
        uid: pod.uid.clone(),
        cgroup_uid: pod.cgroup_uid.clone(),
        labels: pod.labels.clone(),
        namespace_labels,
    });
    explanation.policies = lines;
    Ok(explanation)
}

/// One policy's verdict on the pod, with the agent's reasons.
fn judge(index: &Index, policy: &PolicyInfo, pod: &crate::k8s::model::PodInfo) -> PolicyLine {
    let evaluated = index.evaluate(policy);
    let outcome = &evaluated.outcome;
    let selection = index.selection(policy, pod);
    let exempt = index.exempting_service(policy, pod);
    let (selects, why) = if !outcome.accepted.ok {
        (
            false,
            format!(
                "not accepted ({}): {}",
                outcome.accepted.reason, outcome.accepted.message
            ),
        )
    } else if let Some((ns, service)) = exempt.filter(|_| selection.selected) {
        (
            false,
            format!(
                "exempt: the pod is an endpoint of the policy's gateway Service {ns}/{service}"
            ),
        )
    } else if selection.selected && evaluated.rule.is_none() {
        (
            false,
            format!(
                "{}, but the gateway has no address and the policy is fail-open ({})",
                selection.why, outcome.resolved_refs.message
            ),
        )
    } else {
        (selection.selected, selection.why)
    };
    PolicyLine {
        policy: format!("{}/{}", policy.namespace, policy.name),
        accepted: outcome.accepted.ok,
        selects,
        why,
    }
}

/// An index holding the pod, its namespace, every policy, the Gateways, and the Services and
/// EndpointSlices the policies need.
async fn fetch(
    client: Client,
    settings: IndexSettings,
    pod: &crate::k8s::model::PodInfo,
) -> Result<Index, ExplainError> {
    let mut index = Index {
        settings,
        ..Index::default()
    };
    index
        .pods
        .insert((pod.namespace.clone(), pod.name.clone()), pod.clone());
    if let Some(namespace) = Api::<Namespace>::all(client.clone())
        .get_metadata_opt(&pod.namespace)
        .await?
    {
        index.namespaces.insert(
            (String::new(), pod.namespace.clone()),
            convert::namespace(&namespace),
        );
    }
    for policy in Api::<EgressRedirectPolicy>::all(client.clone())
        .list(&ListParams::default())
        .await?
    {
        index
            .policies
            .insert(key_of(&policy), convert::policy(&policy));
    }
    let gvk = GroupVersionKind::gvk(GATEWAY_GROUP, "v1", "Gateway");
    let gateways: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
    match gateways.list(&ListParams::default()).await {
        Ok(list) => {
            for gateway in list {
                index
                    .gateways
                    .insert(key_of(&gateway), convert::gateway(&gateway));
            }
        }
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(err) => return Err(err.into()),
    }
    for label in [GATEWAY_NAME_LABEL, ENVOY_GATEWAY_NAME_LABEL] {
        for service in Api::<Service>::all(client.clone())
            .list(&ListParams::default().labels(label))
            .await?
        {
            index
                .services
                .insert(key_of(&service), convert::service(&service));
        }
    }
    let refs = index.references();
    for (namespace, name) in &refs.services {
        if let Some(service) = Api::<Service>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?
        {
            index
                .services
                .insert(key_of(&service), convert::service(&service));
        }
    }
    for (namespace, service) in &refs.slices {
        let params = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
        for slice in Api::<EndpointSlice>::namespaced(client.clone(), namespace)
            .list(&params)
            .await?
        {
            index
                .slices
                .insert(key_of(&slice), convert::endpoint_slice(&slice));
        }
    }
    Ok(index)
}
