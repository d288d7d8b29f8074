//! Cases that change the agent or the gateway under traffic: restarts, a rollout, failClosed,
//! and the status and Events a user reads with `kubectl describe`.

use std::{
    process::Child,
    time::{Duration, Instant},
};

use egress_tests::scaled;

use crate::Suite;

/// The labelled pod's connections in a loop (a fresh DNS lookup and connection each time)
/// while `during` runs; returns how many reached the origin and how many of those directly.
fn under_traffic(suite: &Suite, during: impl FnOnce()) -> (usize, usize) {
    let gateway = suite.gateway_ip();
    let pod = suite.wait_for_pod("apps", "curl");
    suite.peers.clear();
    let log = suite.cluster.log_path("traffic");
    let mut traffic: Child = suite
        .kubelet
        .spawn(
            "apps",
            &pod,
            &[
                "sh",
                "-c",
                "while true; do curl -s -m 5 -o /dev/null http://httpbin.org/get; sleep 0.1; done",
            ],
            &log,
        )
        .expect("the curl pod runs");
    during();
    // A few more after it, through whatever now runs.
    std::thread::sleep(scaled(Duration::from_secs(2)));
    let _ = traffic.kill();
    let _ = traffic.wait();
    (suite.peers.total(), suite.peers.direct(gateway))
}

/// The running agent pod's name.
fn agent_pod(suite: &Suite) -> String {
    suite.wait_for_pod("egress-agent-system", "egress-agent")
}

/// Waits until the agent pod answers /ready from the node.
fn wait_agent_ready(suite: &Suite, pod: &str) {
    suite.cluster.wait_for(
        "the agent to be ready",
        scaled(Duration::from_mins(1)),
        |c| {
            let Some(ip) = suite.kubelet.pod_ip("egress-agent-system", pod) else {
                return false;
            };
            c.node
                .command("curl")
                .args(["-sf", "-m", "2", &format!("http://{ip}:9090/ready")])
                .output()
                .is_ok_and(|o| o.status.success())
        },
    );
}

fn restart_with(suite: &Suite, signal: i32) {
    let pod = agent_pod(suite);
    let before = suite
        .kubelet
        .restarts("egress-agent-system", &pod, "agent")
        .expect("agent runs");
    let (total, direct) = under_traffic(suite, || {
        std::thread::sleep(scaled(Duration::from_secs(1)));
        assert!(
            suite
                .kubelet
                .signal("egress-agent-system", &pod, "agent", signal)
        );
        suite.cluster.wait_for(
            "the kubelet to start the agent again",
            scaled(Duration::from_secs(30)),
            |_| {
                suite
                    .kubelet
                    .restarts("egress-agent-system", &pod, "agent")
                    .is_some_and(|n| n > before)
            },
        );
        wait_agent_ready(suite, &pod);
    });
    assert!(total > 0, "no connection reached the origin");
    assert_eq!(direct, 0, "connections that went direct, of {total}");
}

/// SIGTERM: the agent leaves its pinned programs, the kubelet starts it again, it adopts them.
pub(crate) fn restart_sigterm(suite: &Suite) {
    restart_with(suite, libc::SIGTERM);
}

/// SIGKILL: nothing runs at exit; the pins alone keep redirecting until the new agent adopts.
pub(crate) fn restart_sigkill(suite: &Suite) {
    restart_with(suite, libc::SIGKILL);
}

/// A new agent version rolls out (the DaemonSet's template changes): the old pod is deleted,
/// its agent stops on SIGTERM, the new pod starts and adopts.
pub(crate) fn rollout(suite: &Suite) {
    let old = agent_pod(suite);
    let (total, direct) = under_traffic(suite, || {
        suite.cluster.kubectl_ok(&[
            "-n",
            "egress-agent-system",
            "set",
            "env",
            "daemonset/egress-agent",
            "EGRESS_ROLLOUT=2",
        ]);
        suite.cluster.kubectl_ok(&[
            "-n",
            "egress-agent-system",
            "rollout",
            "status",
            "daemonset/egress-agent",
            "--timeout=300s",
        ]);
    });
    let new = agent_pod(suite);
    assert_ne!(old, new, "the rollout replaced the agent's pod");
    wait_agent_ready(suite, &new);
    assert!(total > 0, "no connection reached the origin");
    assert_eq!(direct, 0, "connections that went direct, of {total}");
}

/// Sets the example policy's `failClosed`.
fn set_fail_closed(suite: &Suite, on: bool) {
    suite.cluster.kubectl_ok(&[
        "patch",
        "egressredirectpolicy",
        "-n",
        "gateway-system",
        "httpbin",
        "--type=merge",
        "-p",
        &format!(r#"{{"spec":{{"failClosed":{on}}}}}"#),
    ]);
}

/// With `failClosed`, deleting the Gateway refuses the pod's connections instead of letting
/// them go direct; restoring it restores the redirect.
pub(crate) fn fail_closed_without_the_gateway(suite: &Suite) {
    let gateway = suite.gateway_ip();
    let pod = suite.wait_for_pod("apps", "curl");
    set_fail_closed(suite, true);
    suite.cluster.kubectl_ok(&[
        "delete",
        "gateway",
        "-n",
        "gateway-system",
        "kuadrant-egressgateway",
    ]);
    suite.wait_condition("gateway-system", "httpbin", "FailClosed", "True");
    let until = Instant::now() + scaled(Duration::from_secs(30));
    let mut refused = false;
    while Instant::now() < until && !refused {
        let output = suite
            .kubelet
            .exec(
                "apps",
                &pod,
                &["curl", "-sS", "-m", "5", "http://httpbin.org/get"],
            )
            .expect("curl pod");
        let said = String::from_utf8_lossy(&output.stderr).into_owned();
        refused = !output.status.success() && said.contains("Failed to connect");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(refused, "the connection was never refused");
    assert_eq!(
        suite.peers.direct(gateway),
        0,
        "connections that went direct"
    );
    // Back as it was.
    suite
        .cluster
        .kubectl_ok(&["apply", "-f", "deploy/examples/gateway-api/example.yaml"]);
    suite.program_gateway();
    set_fail_closed(suite, false);
    suite.wait_condition("gateway-system", "httpbin", "Accepted", "True");
    suite.cluster.wait_for(
        "the FailClosed condition to go",
        scaled(Duration::from_mins(1)),
        |c| {
            c.get_json(&["egressredirectpolicy", "-n", "gateway-system", "httpbin"])
                .is_some_and(|p| {
                    !p["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "FailClosed" && c["status"] == "True")
                })
        },
    );
}

/// `kubectl describe erp` shows the conditions and the Events, which only the holder of the
/// status Lease writes.
pub(crate) fn describe_shows_status_and_events(suite: &Suite) {
    let described =
        suite
            .cluster
            .kubectl_ok(&["describe", "erp", "-n", "gateway-system", "httpbin"]);
    assert!(
        described.contains("Type:") && described.contains("Accepted"),
        "{described}"
    );
    // A policy with a problem gets an Event: one whose hostname does not resolve.
    suite.cluster.apply(
        "apiVersion: egress-agent.io/v1alpha1\nkind: EgressRedirectPolicy\nmetadata: {name: nowhere, namespace: gateway-system}\nspec:\n  targetRef: {group: \"\", kind: Service, name: kuadrant-egressgateway-istio}\n  hostnames: [nowhere.example.test]\n  ports: [{port: 80}]\n",
    );
    let mut described = String::new();
    suite.cluster.wait_for(
        "an Event on the policy",
        scaled(Duration::from_mins(1)),
        |c| {
            described = c.kubectl_ok(&["describe", "erp", "-n", "gateway-system", "nowhere"]);
            described.contains("egress-agent")
                && !described.contains("Events:  <none>")
                && described.contains("Events:")
        },
    );
    let lease = suite
        .cluster
        .get_json(&[
            "lease",
            "-n",
            "egress-agent-system",
            "egress-agent-status-writer",
        ])
        .expect("the status Lease");
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
    let events = suite
        .cluster
        .get_json(&["events.events.k8s.io", "-n", "gateway-system"])
        .expect("events");
    let ours: Vec<&serde_json::Value> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["reportingController"]
                .as_str()
                .is_some_and(|c| c.starts_with("egress-agent"))
        })
        .collect();
    assert!(!ours.is_empty(), "{events:#}");
    for event in ours {
        let instance = event["reportingInstance"].as_str().unwrap_or_default();
        assert!(
            holder.contains(egress_tests::realcluster::NODE)
                && instance.ends_with(egress_tests::realcluster::NODE),
            "Event from {instance}, Lease held by {holder}"
        );
    }
    suite
        .cluster
        .kubectl_ok(&["delete", "erp", "-n", "gateway-system", "nowhere"]);
}

/// A watch on a resource the server stops serving backs off: the agent's own requests, counted
/// in the API server's audit log, come further and further apart. (It deletes the policies'
/// CRD, then puts it back.)
pub(crate) fn watch_backoff_against_the_server(suite: &Suite) {
    suite.cluster.kubectl_ok(&[
        "delete",
        "crd",
        "egressredirectpolicies.egress-agent.io",
        "--wait=true",
    ]);
    let since = suite.cluster.audit().len();
    let window = Duration::from_secs(45);
    std::thread::sleep(window);
    // Every request for it now fails (404): the watcher's retries, watch or list.
    let lists: Vec<f64> = suite.cluster.audit()[since..]
        .iter()
        .filter(|e| {
            e["objectRef"]["resource"] == "egressredirectpolicies"
                && e["stage"] == "ResponseComplete"
                && e["responseStatus"]["code"] == 404
        })
        .filter_map(|e| e["requestReceivedTimestamp"].as_str().and_then(seconds))
        .collect();
    let gaps: Vec<f64> = lists.windows(2).map(|w| w[1] - w[0]).collect();
    println!(
        "cluster: {} requests for the unserved resource in {} s, gaps {gaps:.1?} s",
        lists.len(),
        window.as_secs()
    );
    // 1-2, 2-4, 4-8, 8-16, 16-32 s: at most 6 in 45 s (about 37 at the old 1.2 s).
    assert!(
        (3..=7).contains(&lists.len()),
        "{} requests in {} s: {gaps:?}",
        lists.len(),
        window.as_secs()
    );
    assert!(
        gaps.windows(2).all(|g| g[1] >= g[0] * 0.9),
        "the gaps grow: {gaps:?}"
    );
    // The CRD back (the uninstall case deletes it with the rest); the agent finds it at its
    // next retry, up to a minute away, which nothing after this waits for.
    suite.cluster.kubectl_ok(&["apply", "-k", "deploy/"]);
}

/// The README's uninstall: `kubectl delete -k deploy/` removes the policies and the agent but
/// leaves its pinned programs attached (with nothing to route); `deploy/uninstall.yaml` removes
/// them from the node.
pub(crate) fn uninstall_as_the_readme_says(suite: &Suite) {
    let pod = suite.wait_for_pod("apps", "curl");
    suite.cluster.kubectl_ok(&["delete", "-k", "deploy/"]);
    assert!(
        suite
            .kubelet
            .running("egress-agent-system", "egress-agent")
            .is_empty(),
        "the agent's pod is gone"
    );
    let pins = std::path::Path::new(egress_tests::realcluster::AGENT_PINS);
    assert!(pins.exists(), "the agent left its pins for the uninstall");
    suite
        .cluster
        .kubectl_ok(&["apply", "-f", "deploy/uninstall.yaml"]);
    suite.cluster.wait_for(
        "the uninstall DaemonSet to remove the pins",
        scaled(Duration::from_mins(2)),
        |_| !pins.exists(),
    );
    let output = suite
        .kubelet
        .exec(
            "apps",
            &pod,
            &["curl", "-sS", "-i", "-m", "10", "http://httpbin.org/get"],
        )
        .expect("curl pod");
    let reply = String::from_utf8_lossy(&output.stdout);
    assert!(
        reply.contains("saw ") && !reply.contains("Via:"),
        "after the uninstall nothing redirects: {reply}"
    );
    suite
        .cluster
        .kubectl_ok(&["delete", "-f", "deploy/uninstall.yaml"]);
}

/// Seconds of the day of an RFC 3339 timestamp (`2026-12-03T10:14:37.475811Z`).
fn seconds(stamp: &str) -> Option<f64> {
    let time = stamp.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let secs: f64 = parts.next()?.parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + secs)
}
