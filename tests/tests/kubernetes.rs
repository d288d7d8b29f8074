//! End to end in Kubernetes mode: the real agent binary against a test API server speaking the
//! real list/watch protocol, pods as real cgroup directories in the kubelet's layout with real
//! client processes inside, a real DNS server, and the real maps.

use std::time::{Duration, Instant};

use egress_tests::{
    Agent, DnsServer, Probe, Server, TestCgroup, kernel_tests_enabled, kube::FakeApi,
};
use serde_json::{Value, json};

const NODE: &str = "node-1";
const APP_UID: &str = "0a0a0a0a-1111-4222-8333-444444444444";
const GW_UID: &str = "0b0b0b0b-5555-4666-8777-888888888888";

/// A pod's cgroup in the systemd driver's layout, with one container scope inside.
struct PodCgroup {
    container: TestCgroup,
    pod: TestCgroup,
}

impl PodCgroup {
    fn new(qos_slice: &TestCgroup, uid: &str) -> Self {
        let pod = qos_slice.child(&format!(
            "kubepods-burstable-pod{}.slice",
            uid.replace('-', "_")
        ));
        let container = pod.child("cri-containerd-0123456789abcdef.scope");
        Self { container, pod }
    }
}

fn pod(namespace: &str, name: &str, uid: &str, labels: &Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "labels": labels},
        "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "example"}]},
        "status": {"phase": "Running", "qosClass": "Burstable"}
    })
}

fn namespace(name: &str, labels: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn policy(name: &str, service: &str, direct_port: u16, gateway_port: u16) -> Value {
    json!({
        "apiVersion": "egress-agent.io/v1alpha1", "kind": "EgressRedirectPolicy",
        "metadata": {"name": name, "namespace": "gw"},
        "spec": {
            "targetRef": {"group": "", "kind": "Service", "name": service},
            "hostnames": ["web.test"],
            "ports": [{"port": direct_port, "gatewayPort": gateway_port}]
        }
    })
}

fn wait(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + egress_tests::scaled(Duration::from_secs(20));
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("never happened: {what}");
}

fn cgroup_ids(agent: &Agent) -> Vec<(u64, String)> {
    agent
        .maps_json("cgroups")
        .and_then(|v| v["cgroups"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["id"].as_u64().unwrap_or(0),
                c["mode"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Namespaces (both labelled for redirection), the gateway Service with its EndpointSlice and
/// pod, and a policy for web.test.
fn seed_cluster(api: &FakeApi, direct: &Server, gateway: &Server) {
    let redirect = json!({"egress-agent.io/redirect": "true"});
    api.apply(&namespace("apps", &redirect));
    api.apply(&namespace("gw", &redirect));
    api.apply(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "egress-gw", "namespace": "gw"},
        "spec": {"clusterIP": "127.0.0.3", "clusterIPs": ["127.0.0.3"], "ports": [{"port": gateway.port(), "protocol": "TCP"}]}
    }));
    api.apply(&json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "egress-gw-abcde", "namespace": "gw", "labels": {"kubernetes.io/service-name": "egress-gw"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.9"], "targetRef": {"kind": "Pod", "name": "gw-0", "namespace": "gw"}}]
    }));
    api.apply(&pod("gw", "gw-0", GW_UID, &json!({"app": "gateway"})));
    api.apply(&policy("web", "egress-gw", direct.port(), gateway.port()));
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
    api.apply(&policy("broken", "no-such-service", 9, 9));
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
    api.apply(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "other-gw", "namespace": "gw"},
        "spec": {"clusterIP": "127.0.0.4", "clusterIPs": ["127.0.0.4"], "ports": [{"port": 8443, "protocol": "TCP"}]}
    }));
    std::thread::sleep(Duration::from_millis(1100)); // a later creation time: this one is newer
    api.apply(&policy("other", "other-gw", direct_port, 8443));
    let mut missing = policy("missing", "other-gw", 7, 7);
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
    let mut scoped = policy("scoped", "egress-gw", other.port(), gateway.port());
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
    // The node's cgroup2 hierarchy, as the kubelet (systemd driver) lays it out.
    let root = TestCgroup::new("k8s-node");
    let kubepods = root.child("kubepods.slice");
    let burstable = kubepods.child("kubepods-burstable.slice");
    let gateway_pod = PodCgroup::new(&burstable, GW_UID);

    let direct = Server::start("127.0.0.2", "direct");
    let gateway = Server::start("127.0.0.3", "gateway");
    let dns = DnsServer::start(1, &[("web.test", "127.0.0.2")], &[]);
    let api = FakeApi::start();
    seed_cluster(&api, &direct, &gateway);

    let agent = Agent::start_kubernetes(&[
        "--node-name",
        NODE,
        "--kubeconfig",
        &api.kubeconfig().display().to_string(),
        "--cgroup-root",
        &root.path().display().to_string(),
        "--dns-server",
        &dns.addr(),
        "--trusted-namespace",
        "gw",
    ]);
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

    // The app pod appears in the API before its cgroup exists (the usual order) ...
    api.apply(&pod("apps", "app", APP_UID, &json!({"app": "client"})));
    std::thread::sleep(Duration::from_millis(300));
    // ... then the kubelet creates the cgroup: the inotify watch brings it in.
    let app_pod = PodCgroup::new(&burstable, APP_UID);
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
    drop((
        app_pod.container,
        app_pod.pod,
        gateway_pod.container,
        gateway_pod.pod,
        burstable,
        kubepods,
    ));
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
