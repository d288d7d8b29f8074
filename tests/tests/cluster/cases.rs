//! The cluster suite's cases, run in this order on one cluster.

use std::{process::Output, time::Duration};

use egress_tests::scaled;

use crate::{Suite, lifecycle};

/// A case: its name and body.
pub(crate) type Case = (&'static str, fn(&Suite));

/// Every case, in order.
pub(crate) const CASES: [Case; 16] = [
    (
        "a_labelled_pods_connections_go_through_kube_proxy_to_the_gateway",
        labelled_pod_goes_through_the_gateway,
    ),
    (
        "the_gateway_pod_itself_goes_direct",
        gateway_pod_goes_direct,
    ),
    (
        "rotating_answers_and_a_wildcard_through_coredns_are_learned",
        rotating_and_wildcard,
    ),
    (
        "a_new_pods_first_connection_is_redirected",
        new_pod_first_connection,
    ),
    (
        "every_manifest_passes_the_servers_strict_validation",
        every_manifest_passes_the_servers_strict_validation,
    ),
    (
        "invalid_policies_get_the_servers_own_message",
        invalid_policies_rejected,
    ),
    (
        "a_tenants_namespace_selector_is_refused_by_admission_and_by_the_agent",
        tenant_namespace_selector,
    ),
    (
        "the_agents_service_account_has_what_it_needs_and_nothing_more",
        rbac_is_minimal,
    ),
    ("metrics_are_scraped_from_the_agent", metrics_scraped),
    (
        "policy_status_and_events_show_in_kubectl_describe",
        lifecycle::describe_shows_status_and_events,
    ),
    (
        "an_agent_restart_on_sigterm_under_traffic",
        lifecycle::restart_sigterm,
    ),
    (
        "an_agent_restart_on_sigkill_under_traffic",
        lifecycle::restart_sigkill,
    ),
    (
        "a_rollout_to_a_new_agent_version_under_traffic",
        lifecycle::rollout,
    ),
    (
        "fail_closed_with_the_gateway_deleted",
        lifecycle::fail_closed_without_the_gateway,
    ),
    (
        "a_watch_on_an_unserved_resource_backs_off",
        lifecycle::watch_backoff_against_the_server,
    ),
    (
        "uninstall_as_the_readme_says",
        lifecycle::uninstall_as_the_readme_says,
    ),
];

fn text_of(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `curl` in a pod; returns its output (headers and body).
fn curl(suite: &Suite, namespace: &str, pod: &str, url: &str) -> String {
    let output = suite
        .kubelet
        .exec(
            namespace,
            pod,
            &["curl", "-sS", "-i", "-m", "10", "--retry", "0", url],
        )
        .unwrap_or_else(|| panic!("{namespace}/{pod} does not run"));
    text_of(&output)
}

fn labelled_pod_goes_through_the_gateway(suite: &Suite) {
    let gateway = suite.gateway_ip();
    let pod = suite.wait_for_pod("apps", "curl");
    // The agent may still be learning the example's policy: wait until its status says so.
    wait_accepted(suite, "gateway-system", "httpbin");
    for _ in 0..5 {
        let reply = curl(suite, "apps", &pod, "http://httpbin.org/get");
        assert!(
            reply.contains("Via: 1.1 egress-gateway") && reply.contains(&format!("saw {gateway}")),
            "the reply came through the gateway: {reply}"
        );
    }
    assert_eq!(
        suite.peers.direct(gateway),
        0,
        "connections that went direct"
    );
    assert_eq!(suite.peers.total(), 5);
}

fn gateway_pod_goes_direct(suite: &Suite) {
    let gateway = suite.gateway_ip();
    let pod = suite.wait_for_pod("gateway-system", "kuadrant-egressgateway-istio");
    let reply = curl(suite, "gateway-system", &pod, "http://httpbin.org/get");
    assert!(
        !reply.contains("Via:") && reply.contains(&format!("saw {gateway}")),
        "the gateway reached the origin itself: {reply}"
    );
}

fn rotating_and_wildcard(suite: &Suite) {
    let gateway = suite.gateway_ip();
    suite.cluster.apply(
        "apiVersion: egress-agent.io/v1alpha1\nkind: EgressRedirectPolicy\nmetadata: {name: example-test, namespace: gateway-system}\nspec:\n  targetRef: {group: \"\", kind: Service, name: kuadrant-egressgateway-istio}\n  hostnames: [rotating.example.test, \"*.wild.example.test\"]\n  ports: [{port: 80}]\n",
    );
    wait_accepted(suite, "gateway-system", "example-test");
    let pod = suite.wait_for_pod("apps", "curl");
    for _ in 0..8 {
        let reply = curl(suite, "apps", &pod, "http://rotating.example.test/");
        assert!(reply.contains("Via: 1.1 egress-gateway"), "{reply}");
    }
    let reply = curl(suite, "apps", &pod, "http://a.b.wild.example.test/");
    assert!(reply.contains("Via: 1.1 egress-gateway"), "{reply}");
    assert_eq!(
        suite.peers.direct(gateway),
        0,
        "connections that went direct"
    );
    assert_eq!(suite.peers.total(), 9);
}

fn new_pod_first_connection(suite: &Suite) {
    let gateway = suite.gateway_ip();
    suite.cluster.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: first-connection, namespace: apps}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: curl\n    image: curlimages/curl:8.10.1\n    command: [curl, -sS, -i, -m, \"10\", http://httpbin.org/get]\n",
    );
    let log = suite.cluster.log_path("pod-apps-first-connection-curl");
    let mut reply = String::new();
    suite.cluster.wait_for(
        "the new pod's curl to finish",
        scaled(Duration::from_mins(1)),
        |_| {
            reply = std::fs::read_to_string(&log).unwrap_or_default();
            reply.contains("saw ") || reply.contains("curl:")
        },
    );
    assert!(reply.contains("Via: 1.1 egress-gateway"), "{reply}");
    assert_eq!(
        suite.peers.direct(gateway),
        0,
        "connections that went direct"
    );
    suite.cluster.kubectl_ok(&[
        "delete",
        "pod",
        "-n",
        "apps",
        "first-connection",
        "--wait=false",
    ]);
}

fn invalid_policies_rejected(suite: &Suite) {
    let cases = [
        (
            "targetRef: {group: apps, kind: Deployment, name: x}",
            "targetRef must be a Gateway (group gateway.networking.k8s.io) or a Service (group \"\")",
        ),
        (
            "targetRef: {kind: Service, name: x}\n  hostnames: [Bad_Host]",
            "spec.hostnames[0]: Invalid value: \"Bad_Host\": spec.hostnames[0] in body should match",
        ),
        (
            "targetRef: {kind: Service, name: x}\n  ports: [{port: 0}]",
            "spec.ports[0].port: Invalid value: 0: spec.ports[0].port in body should be greater than or equal to 1",
        ),
        (
            "targetRef: {kind: Service, name: x}\n  ports: [{port: 80, protocol: SCTP}]",
            "spec.ports[0].protocol: Unsupported value: \"SCTP\": supported values: \"TCP\", \"UDP\"",
        ),
    ];
    for (spec, message) in cases {
        let yaml = format!(
            "apiVersion: egress-agent.io/v1alpha1\nkind: EgressRedirectPolicy\nmetadata: {{name: invalid, namespace: apps}}\nspec:\n  {spec}\n"
        );
        let output = suite
            .cluster
            .kubectl_as("admin", &["apply", "-f", "-"], Some(&yaml));
        let said = text_of(&output);
        assert!(!output.status.success(), "accepted: {spec}");
        assert!(
            said.contains(message),
            "the server said\n{said}\nnot\n{message}"
        );
    }
}

fn tenant_namespace_selector(suite: &Suite) {
    suite
        .cluster
        .apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: tenant}\n");
    let yaml = "apiVersion: egress-agent.io/v1alpha1\nkind: EgressRedirectPolicy\nmetadata: {name: grab, namespace: tenant}\nspec:\n  targetRef: {kind: Service, name: gw}\n  namespaceSelector: {matchLabels: {team: a}}\n";
    let output = suite
        .cluster
        .kubectl_as("admin", &["apply", "-f", "-"], Some(yaml));
    let said = text_of(&output);
    assert!(!output.status.success(), "admitted: {said}");
    assert!(
        said.contains("ValidatingAdmissionPolicy 'egress-agent-tenancy'")
            && said.contains("EgressRedirectPolicy tenant/grab: spec.namespaceSelector selects pods outside namespace tenant"),
        "{said}"
    );
    // What the policy admits: a selector in a trusted namespace, an explicit null selector
    // anywhere; and a namespace whose name only starts like a trusted one is not trusted.
    let policy = |namespace: &str, selector: &str| {
        format!(
            "apiVersion: egress-agent.io/v1alpha1\nkind: EgressRedirectPolicy\nmetadata: {{name: probe, namespace: {namespace}}}\nspec:\n  targetRef: {{kind: Service, name: gw}}\n  namespaceSelector: {selector}\n"
        )
    };
    suite
        .cluster
        .apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: gateway-system-x}\n");
    for (namespace, selector, admitted) in [
        ("gateway-system", "{matchLabels: {team: a}}", true),
        ("tenant", "null", true),
        ("gateway-system-x", "{matchLabels: {team: a}}", false),
    ] {
        let output = suite.cluster.kubectl_as(
            "admin",
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&policy(namespace, selector)),
        );
        assert_eq!(
            output.status.success(),
            admitted,
            "{namespace} with namespaceSelector {selector}: {}",
            text_of(&output)
        );
    }
    // Without the admission policy's binding, the agent is the last line.
    suite.cluster.kubectl_ok(&[
        "delete",
        "validatingadmissionpolicybinding",
        "egress-agent-tenancy",
    ]);
    suite.cluster.wait_for(
        "the policy to be admitted without the binding",
        scaled(Duration::from_secs(30)),
        |c| {
            c.kubectl_as("admin", &["apply", "-f", "-"], Some(yaml))
                .status
                .success()
        },
    );
    let reason = suite.wait_condition("tenant", "grab", "Accepted", "False");
    assert_eq!(reason, "NamespaceNotTrusted");
    suite
        .cluster
        .kubectl_ok(&["delete", "egressredirectpolicy", "-n", "tenant", "grab"]);
    suite.cluster.kubectl_ok(&["apply", "-k", "deploy/"]);
}

/// What `kubectl auth can-i --list` grants `user` in `namespace`: `resource [verbs]` lines.
fn can_i(suite: &Suite, user: &str, namespace: &str) -> Vec<String> {
    let list = suite.cluster.kubectl_ok(&[
        "auth",
        "can-i",
        "--list",
        &format!("--as={user}"),
        "-n",
        namespace,
    ]);
    list.lines()
        .skip(1)
        .filter_map(|line| {
            let resource = line.split_whitespace().next()?;
            let verbs = &line[line.rfind('[')?..];
            // Non-resource URLs (discovery, health) have no resource.
            (!resource.starts_with('[')).then(|| format!("{namespace} {resource} {verbs}"))
        })
        .collect()
}

fn rbac_is_minimal(suite: &Suite) {
    let agent = "system:serviceaccount:egress-agent-system:egress-agent";
    // What every service account may do (self reviews, ClusterTrustBundles, ...).
    let anyone = "system:serviceaccount:apps:default";
    let mut granted = Vec::new();
    for namespace in ["egress-agent-system", "apps"] {
        let baseline = can_i(suite, anyone, namespace);
        granted.extend(
            can_i(suite, agent, namespace)
                .into_iter()
                .filter(|line| !baseline.contains(line)),
        );
    }
    granted.sort();
    let expected = [
        "apps egressredirectpolicies.egress-agent.io [list watch]",
        "apps egressredirectpolicies.egress-agent.io/status [patch]",
        "apps endpointslices.discovery.k8s.io [get list watch]",
        "apps events.events.k8s.io [create]",
        "apps gateways.gateway.networking.k8s.io [list watch]",
        "apps namespaces [get list watch]",
        "apps pods [get list watch]",
        "apps services [get list watch]",
        "egress-agent-system egressredirectpolicies.egress-agent.io [list watch]",
        "egress-agent-system egressredirectpolicies.egress-agent.io/status [patch]",
        "egress-agent-system endpointslices.discovery.k8s.io [get list watch]",
        "egress-agent-system events.events.k8s.io [create]",
        "egress-agent-system gateways.gateway.networking.k8s.io [list watch]",
        "egress-agent-system leases.coordination.k8s.io [get create update]",
        "egress-agent-system namespaces [get list watch]",
        "egress-agent-system pods [get list watch]",
        "egress-agent-system services [get list watch]",
    ];
    assert_eq!(granted, expected, "kubectl auth can-i --list as the agent");
    // And it needs all of it: the agent never met a "forbidden".
    let logs = agent_log(suite);
    assert!(
        !logs.contains("forbidden"),
        "the agent was refused:\n{logs}"
    );
}

fn metrics_scraped(suite: &Suite) {
    let pod = suite.wait_for_pod("egress-agent-system", "egress-agent");
    let ip = suite
        .kubelet
        .pod_ip("egress-agent-system", &pod)
        .expect("agent pod");
    let output = suite
        .cluster
        .node
        .command("curl")
        .args(["-sf", "-m", "5", &format!("http://{ip}:9090/metrics")])
        .output()
        .expect("curl");
    let metrics = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "scrape failed: {}",
        text_of(&output)
    );
    assert!(metrics.contains("egress_"), "{metrics}");
    let checked = egress_tests::realcluster::run_with_stdin(
        std::process::Command::new("promtool").args(["check", "metrics"]),
        Some(&metrics),
    );
    assert!(checked.status.success(), "promtool: {}", text_of(&checked));
}

/// The agent pod's log.
fn agent_log(suite: &Suite) -> String {
    let pod = suite.wait_for_pod("egress-agent-system", "egress-agent");
    std::fs::read_to_string(
        suite
            .cluster
            .log_path(&format!("pod-egress-agent-system-{pod}-agent")),
    )
    .unwrap_or_default()
}

/// Waits for the policy's `Accepted=True`.
fn wait_accepted(suite: &Suite, namespace: &str, name: &str) {
    suite.wait_condition(namespace, name, "Accepted", "True");
}

/// Every manifest under deploy/, document by document, through the API server's own
/// validation: `kubectl apply --dry-run=server --validate=strict` (schemas, unknown fields,
/// CEL, admission). Only kinds this cluster does not serve are left out, and they must be the
/// third parties' (Istio's and the Prometheus operator's).
fn every_manifest_passes_the_servers_strict_validation(suite: &Suite) {
    let root = egress_tests::workspace_root().join("deploy");
    let mut files = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("deploy/").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml")
                && path.file_name().is_some_and(|n| n != "kustomization.yaml")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    // A dry run creates nothing, so the namespaces the manifests' objects live in must exist.
    for file in &files {
        let text = std::fs::read_to_string(file).expect("manifest");
        for line in text.lines() {
            if let Some(namespace) = line.trim().strip_prefix("namespace: ") {
                let namespace = namespace.trim();
                if suite.cluster.get_json(&["namespace", namespace]).is_none() {
                    suite
                        .cluster
                        .kubectl_ok(&["create", "namespace", namespace, "--save-config"]);
                }
            }
        }
    }
    let (mut checked, mut unserved) = (0, Vec::new());
    for file in &files {
        let text = std::fs::read_to_string(file).expect("manifest");
        for document in text.split("\n---").filter(|d| d.contains("kind:")) {
            let output = suite.cluster.kubectl_as(
                "admin",
                &["apply", "--dry-run=server", "--validate=strict", "-f", "-"],
                Some(document),
            );
            let said = text_of(&output);
            if said.contains("no matches for kind") {
                let kind = said
                    .split("no matches for kind \"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or_default()
                    .to_owned();
                unserved.push(kind);
                continue;
            }
            assert!(
                output.status.success() && !said.contains("Warning"),
                "{}: the server said {said}",
                file.display()
            );
            checked += 1;
        }
    }
    unserved.sort();
    unserved.dedup();
    println!(
        "cluster: {checked} documents in {} files passed the server's strict validation; not served here: {unserved:?}",
        files.len()
    );
    let third_party = [
        "Gateway",
        "PodMonitor",
        "PrometheusRule",
        "ServiceEntry",
        "VirtualService",
    ];
    assert!(
        unserved.iter().all(|k| third_party.contains(&k.as_str())),
        "kinds the server did not know: {unserved:?}"
    );
    assert!(checked >= 15, "only {checked} documents checked");
}
