//! The `EgressRedirectPolicy` API (group `egress-agent.io`), following Gateway API policy
//! attachment: a policy targets a Gateway or a Service in its own namespace and says which
//! hostnames and ports its selected workloads reach through it.
//!
//! The CRD YAML in `deploy/crd.yaml` is generated from these types (`egress-agent crd`); a test
//! fails when the checked-in file is stale.
#![expect(
    unreachable_pub,
    reason = "kube's KubeSchema derive re-emits these structs inside a private module"
)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The label (on pods or namespaces) that selects workloads by default.
pub const REDIRECT_LABEL: &str = "egress-agent.io/redirect";
/// Gateway API's group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Redirects selected workloads' connections for some hostnames to an egress gateway.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "egress-agent.io",
    version = "v1alpha1",
    kind = "EgressRedirectPolicy",
    namespaced,
    status = "EgressRedirectPolicyStatus",
    shortname = "erp",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EgressRedirectPolicySpec {
    /// The egress gateway: a Gateway (`gateway.networking.k8s.io`) or a Service (core, group
    /// `""`) in the policy's namespace.
    pub target_ref: TargetRef,
    /// Hostnames whose connections go through the gateway. Default for a Gateway target: its
    /// listeners' hostnames. A `*.` wildcard matches one or more labels (not the apex); its
    /// addresses are learned from the DNS answers selected pods receive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub hostnames: Vec<Hostname>,
    /// Ports to redirect. Default: the Gateway's listener ports (HTTP 80→80, TLS/HTTPS
    /// 443→443) or the Service's ports (port→port).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ports: Vec<PolicyPort>,
    /// Refuse connections (EPERM) instead of letting them go direct while the gateway has no
    /// address.
    #[serde(default)]
    pub fail_closed: bool,
    /// Refuse QUIC (UDP 443) to the hostnames' addresses where TCP 443 is redirected, so HTTP/3
    /// clients fall back to TCP through the gateway. Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse_quic: Option<bool>,
    /// Pods to redirect. Default: pods labelled `egress-agent.io/redirect: "true"`, or in a
    /// namespace so labelled (a pod labelled `"false"` opts out), within the namespaces the
    /// policy may select.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelSelector>,
    /// Namespaces whose pods may be selected. Only a policy in a namespace the cluster admin
    /// trusts (the agent's `--trusted-namespace`) may select outside its own namespace: there
    /// the default is every namespace; elsewhere the policy selects only in its own namespace,
    /// and setting this makes it not accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// A reference to the gateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "(self.kind == 'Gateway' && self.group == 'gateway.networking.k8s.io') || (self.kind == 'Service' && self.group == '')"
).message("targetRef must be a Gateway (group gateway.networking.k8s.io) or a Service (group \"\")"))]
pub struct TargetRef {
    /// `gateway.networking.k8s.io` for a Gateway, `""` for a Service.
    #[serde(default)]
    pub group: String,
    /// `Gateway` or `Service`.
    pub kind: String,
    /// The name, in the policy's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A hostname, optionally with a leading `*.` wildcard.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(transparent)]
pub struct Hostname(
    #[schemars(
        length(min = 1, max = 253),
        regex(
            pattern = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
        )
    )]
    pub String,
);

/// Drops schemars' `uint16` format: the API server knows no such format and warns about it on
/// every apply; `range` bounds the value instead.
fn without_format(schema: &mut schemars::Schema) {
    schema.remove("format");
}

/// One port mapping.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPort {
    /// The port applications connect to.
    #[schemars(range(min = 1, max = 65535), transform = without_format)]
    pub port: u16,
    /// The gateway's port (default: `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535), transform = without_format)]
    pub gateway_port: Option<u16>,
    /// `TCP` (default) or `UDP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<PortProtocol>,
}

/// Transport protocol.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortProtocol {
    /// TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
}

/// Status, written by one agent in the cluster (the holder of the status Lease).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EgressRedirectPolicyStatus {
    /// `Accepted`, `ResolvedRefs`, and for a fail-closed policy `FailClosed` (whether, and
    /// why, matching connections are being refused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The hostnames and ports last taken from the target (when the spec names none). They
    /// stay in force while the target is gone, so a fail-closed policy keeps refusing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<StatusDefaults>,
}

/// Defaults taken from the target.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StatusDefaults {
    /// From the Gateway's listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// From the Gateway's listeners or the Service's ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PolicyPort>,
}

/// The CRD as YAML, as checked in at `deploy/crd.yaml`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt as _;
    let crd = EgressRedirectPolicy::crd();
    let body = serde_yaml::to_string(&crd).unwrap_or_default();
    format!(
        "# Generated by `egress-agent crd` from egress-agent/src/k8s/crd.rs; do not edit.\n{body}"
    )
}

#[cfg(test)]
#[path = "crd_tests.rs"]
mod tests;

/// The manifests under `deploy/`, the CRD's among them: what no API server checks (how the
/// documents fit together, the alerts against the agent's metrics).
#[cfg(test)]
#[path = "deploy_tests.rs"]
mod deploy_tests;
