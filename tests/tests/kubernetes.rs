//! End to end in Kubernetes mode: the real agent binary against a test API server speaking the
//! real list/watch protocol, pods as real cgroup directories in the kubelet's layout with real
//! client processes inside, a real DNS server, and the real maps.

use std::time::Duration;

use egress_tests::{
    Agent, DnsServer, Probe, Server, TestCgroup,
    cluster::{Node, PodCgroup, cgroup_ids, endpoints, namespace, pod, policy, service, wait},
    kernel_tests_enabled,
    kube::FakeApi,
};
use serde_json::{Value, json};

const APP_UID: &str = "0a0a0a0a-1111-4222-8333-444444444444";
const GW_UID: &str = "0b0b0b0b-5555-4666-8777-888888888888";

fn web_policy(name: &str, service: &str, direct_port: u16, gateway_port: u16) -> Value {
    policy(
        "gw",
        name,
        service,
        &["web.test"],
        direct_port,
        gateway_port,
    )
}

/// Namespaces (both labelled for redirection), the gateway Service with its EndpointSlice and
/// pod, and a policy for web.test.
fn seed_cluster(api: &FakeApi, direct: &Server, gateway: &Server) {
    let redirect = json!({"egress-agent.io/redirect": "true"});
    api.apply(&namespace("apps", &redirect));
    api.apply(&namespace("gw", &redirect));
    api.apply(&service(
        "gw",
        "egress-gw",
        "127.0.0.3",
        &[gateway.port()],
        &json!({}),
    ));
    api.apply(&endpoints("gw", "egress-gw", &["gw-0"]));
    api.apply(&pod("gw", "gw-0", GW_UID, &json!({"app": "gateway"})));
    api.apply(&web_policy(
        "web",
        "egress-gw",
        direct.port(),
        gateway.port(),
    ));
}

/// A bad policy gives an Event and a status, and changes nothing else.
fn bad_policy_is_reported_and_changes_nothing(api: &FakeApi, agent: &Agent) {
    // Routes without their time-dependent field.
    let routes = || -> Vec<Value> {
        agent
            .routes()
            .into_iter()
            .map(|mut route| {
                route.as_object_mut().map(|r| r.remove("expiresInSecs"));
                route
            })
            .collect()
    };
    let routes_before = routes();
    api.apply(&web_policy("broken", "no-such-service", 9, 9));
    wait("TargetNotFound Event", || {
        api.events()
            .iter()
            .any(|e| e["reason"] == "TargetNotFound" && e["regarding"]["name"] == "broken")
    });
    wait("broken policy status", || {
        let status = api.get(
            "/apis/egress-agent.io/v1alpha1/egressredirectpolicies",
            "gw",
            "broken",
        );
        status["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "ResolvedRefs" && c["status"] == "False")
        })
    });
    let good = api.get(
        "/apis/egress-agent.io/v1alpha1/egressredirectpolicies",
        "gw",
        "web",
    );
    let accepted = good["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        accepted
            .iter()
            .any(|c| c["type"] == "Accepted" && c["status"] == "True"),
        "good policy accepted: {good:#}"
    );
    assert_eq!(routes(), routes_before, "a bad policy changes nothing else");
}

/// A newer policy claiming web.test with another gateway loses and gets a Conflict Event; a
/// policy for a name that does not exist gets a `HostnameUnresolvable` Event.
fn conflicts_and_unresolvable_hostnames_are_reported(
    api: &FakeApi,
    agent: &Agent,
    direct_port: u16,
    app_cgroup: u64,
) {
    api.apply(&service("gw", "other-gw", "127.0.0.4", &[8443], &json!({})));
    std::thread::sleep(Duration::from_millis(1100)); // a later creation time: this one is newer
    api.apply(&web_policy("other", "other-gw", direct_port, 8443));
    let mut missing = web_policy("missing", "other-gw", 7, 7);
    missing["spec"]["hostnames"] = json!(["missing.test"]);
    api.apply(&missing);
    wait("Conflict Event on the newer policy", || {
        api.events()
            .iter()
            .any(|e| e["reason"] == "Conflict" && e["regarding"]["name"] == "other")
    });
    wait("HostnameUnresolvable Event", || {
        api.events()
            .iter()
            .any(|e| e["reason"] == "HostnameUnresolvable" && e["regarding"]["name"] == "missing")
    });
    // The app pod is selected by both: the older policy keeps the destination there.
    let class = agent.maps_json("cgroups").and_then(|v| {
        v["cgroups"]
            .as_array()?
            .iter()
            .find(|c| c["id"] == app_cgroup)
            .map(|c| c["class"].clone())
    });
    let routes = agent.routes();
    let route = routes
        .iter()
        .find(|r| r["destination"] == "127.0.0.2/32" && Some(&r["class"]) == class.as_ref())
        .unwrap_or_else(|| panic!("web.test route of the app pod's class: {routes:#?}"));
    assert_eq!(
        route["gateway"], "127.0.0.3",
        "the older policy keeps the destination: {route}"
    );
}

/// A policy whose `workloadSelector` matches nothing here: its route exists, but the app pod
/// (selected by the other policy) is not redirected by it.
fn scoped_policies_do_not_leak_to_other_workloads(
    api: &FakeApi,
    agent: &Agent,
    app: &TestCgroup,
    gateway: &Server,
) {
    let other = Server::start("127.0.0.2", "other-direct");
    let mut scoped = web_policy("scoped", "egress-gw", other.port(), gateway.port());
    scoped["spec"]["workloadSelector"] = json!({"matchLabels": {"app": "nobody"}});
    api.apply(&scoped);
    wait("scoped policy accepted", || {
        let status = api.get(
            "/apis/egress-agent.io/v1alpha1/egressredirectpolicies",
            "gw",
            "scoped",
        );
        status["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Accepted" && c["status"] == "True")
        })
    });
    let _ = agent;
    assert_eq!(
        Probe::run(app, "tcp", &other.addr.to_string()).reply(),
        "other-direct",
        "a pod selected by one policy is not redirected by another policy's selector"
    );
    api.delete(&scoped);
}

#[test]
fn kubernetes_mode_end_to_end() {
    if !kernel_tests_enabled() {
        return;
    }
    let node = Node::new();
    let gateway_pod = node.pod(GW_UID);

    let direct = Server::start("127.0.0.2", "direct");
    let gateway = Server::start("127.0.0.3", "gateway");
    let dns = DnsServer::start(1, &[("web.test", "127.0.0.2")], &[]);
    let api = FakeApi::start();
    seed_cluster(&api, &direct, &gateway);

    let agent = node.agent(
        &api,
        &["--dns-server", &dns.addr(), "--trusted-namespace", "gw"],
    );
    agent.wait_status("policy's hostname resolved", |status| {
        status["hosts"].as_array().is_some_and(|hosts| {
            hosts
                .iter()
                .any(|h| h["name"] == "web.test" && h["addresses"][0]["address"] == "127.0.0.2")
        })
    });
    wait("/ready once attached and synced", || {
        agent.admin_get("/ready").0 == 200
    });

    // The app pod appears in the API before its cgroup exists (the usual order): the agent
    // selects it and misses its cgroup ...
    api.apply(&pod("apps", "app", APP_UID, &json!({"app": "client"})));
    agent.wait_status("the app pod selected, its cgroup missing", |status| {
        status["agent"]["missingCgroups"]
            .as_array()
            .is_some_and(|m| {
                m.iter()
                    .any(|p| p.as_str().is_some_and(|p| p.contains("apps/app ")))
            })
    });
    // ... then the kubelet creates the cgroup: the inotify watch brings it in.
    let app_pod = node.pod(APP_UID);
    wait("app pod cgroup selected", || {
        cgroup_ids(&agent).contains(&(app_pod.pod.id(), "selected".into()))
    });
    assert!(
        cgroup_ids(&agent).contains(&(gateway_pod.pod.id(), "exempt".into())),
        "gateway endpoint pod exempt: {:?}",
        cgroup_ids(&agent)
    );

    let target = direct.addr.to_string();
    assert_eq!(
        Probe::run(&app_pod.container, "tcp", &target).reply(),
        "gateway",
        "a labelled workload goes through the gateway"
    );
    assert_eq!(
        Probe::run(&gateway_pod.container, "tcp", &target).reply(),
        "direct",
        "the gateway's own pod goes direct"
    );

    scoped_policies_do_not_leak_to_other_workloads(&api, &agent, &app_pod.container, &gateway);

    labels_and_deletion_are_followed(&api, &agent, &app_pod, &target);

    bad_policy_is_reported_and_changes_nothing(&api, &agent);
    conflicts_and_unresolvable_hostnames_are_reported(
        &api,
        &agent,
        direct.port(),
        app_pod.pod.id(),
    );
    if std::env::var_os("EGRESS_SHOW_LOG").is_some() {
        eprintln!("{}", agent.log());
    }
    drop((app_pod, gateway_pod, node));
}

/// Removing the label stops the redirect, deleting the pod removes its entry, and a pod whose
/// cgroup exists before its API event is selected on the event.
fn labels_and_deletion_are_followed(
    api: &FakeApi,
    agent: &Agent,
    app_pod: &PodCgroup,
    target: &str,
) {
    let redirect = json!({"egress-agent.io/redirect": "true"});
    api.apply(&namespace("apps", &json!({})));
    wait("app pod no longer selected", || {
        !cgroup_ids(agent)
            .iter()
            .any(|(id, _)| *id == app_pod.pod.id())
    });
    assert_eq!(
        Probe::run(&app_pod.container, "tcp", target).reply(),
        "direct"
    );

    // Deleting the pod cleans up.
    api.apply(&namespace("apps", &redirect));
    wait("selected again", || {
        cgroup_ids(agent).contains(&(app_pod.pod.id(), "selected".into()))
    });
    api.delete(&pod("apps", "app", APP_UID, &json!({})));
    wait("deleted pod's entry removed", || {
        !cgroup_ids(agent)
            .iter()
            .any(|(id, _)| *id == app_pod.pod.id())
    });

    // The other order: the cgroup already exists when the pod shows up in the API.
    api.apply(&pod("apps", "app", APP_UID, &json!({"app": "client"})));
    wait(
        "pod with an existing cgroup selected on its API event",
        || cgroup_ids(agent).contains(&(app_pod.pod.id(), "selected".into())),
    );
    assert_eq!(
        Probe::run(&app_pod.container, "tcp", target).reply(),
        "gateway"
    );
}
