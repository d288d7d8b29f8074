//! The Kubernetes control plane end to end: the real agent against the list/watch test server,
//! real pod cgroups and real connections. Tenancy, fail-closed on every path, status and
//! Events from one writer with the object's UID, and watches that survive 410s, failures and
//! pagination without ever emptying what they know.

use std::time::{Duration, Instant};

use egress_tests::{
    Agent, DnsServer, Probe, Server,
    cluster::{
        Node, POLICIES, cgroup_ids, condition, endpoints, namespace, pod, policy, service, wait,
    },
    kernel_tests_enabled,
    kube::FakeApi,
    scaled,
};
use serde_json::{Value, json};

const TENANT_UID: &str = "1a1a1a1a-1111-4111-8111-111111111111";
const APP_UID: &str = "2b2b2b2b-2222-4222-8222-222222222222";
const GW_UID: &str = "3c3c3c3c-3333-4333-8333-333333333333";

/// Labelled namespaces `apps` and `tenant`, and the platform's gateway (`gw/egress-gw`,
/// 127.0.0.3) with its pod.
fn platform(api: &FakeApi, gateway: &Server) {
    let redirect = json!({"egress-agent.io/redirect": "true"});
    api.apply(&namespace("apps", &redirect));
    api.apply(&namespace("tenant", &redirect));
    api.apply(&namespace("gw", &json!({})));
    api.apply(&service(
        "gw",
        "egress-gw",
        "127.0.0.3",
        &[gateway.port()],
        &json!({}),
    ));
    api.apply(&endpoints("gw", "egress-gw", &["gw-0"]));
    api.apply(&pod("gw", "gw-0", GW_UID, &json!({})));
}

/// The route rows of the class a cgroup is in.
fn routes_of(agent: &Agent, cgroup: u64) -> Vec<Value> {
    let class = agent.maps_json("cgroups").and_then(|v| {
        v["cgroups"]
            .as_array()?
            .iter()
            .find(|c| c["id"] == cgroup)
            .map(|c| c["class"].clone())
    });
    agent
        .routes()
        .into_iter()
        .filter(|r| Some(&r["class"]) == class.as_ref())
        .collect()
}

#[test]
fn a_tenant_can_neither_escape_nor_steer() {
    if !kernel_tests_enabled() {
        return;
    }
    let node = Node::new();
    let web = Server::start("127.0.0.2", "direct");
    let bank = Server::start("127.0.0.5", "bank-direct");
    let gateway = Server::start("127.0.0.3", "gateway");
    let tenant_gateway = Server::start("127.0.0.4", "tenant-gateway");
    let dns = DnsServer::start(
        60,
        &[("web.test", "127.0.0.2"), ("bank.test", "127.0.0.5")],
        &[],
    );
    let api = FakeApi::start();
    platform(&api, &gateway);
    // The platform's policy: labelled namespaces' pods reach web.test via the gateway.
    api.apply(&policy(
        "gw",
        "platform",
        "egress-gw",
        &["web.test"],
        web.port(),
        gateway.port(),
    ));
    api.apply(&pod("tenant", "tenant-app", TENANT_UID, &json!({})));
    api.apply(&pod("apps", "app", APP_UID, &json!({})));
    let tenant_pod = node.pod(TENANT_UID);
    let app_pod = node.pod(APP_UID);
    let _gw_pod = node.pod(GW_UID);
    let agent = node.agent(
        &api,
        &["--dns-server", &dns.addr(), "--trusted-namespace", "gw"],
    );
    wait("both pods selected", || {
        let ids = cgroup_ids(&agent);
        ids.contains(&(tenant_pod.pod.id(), "selected".into()))
            && ids.contains(&(app_pod.pod.id(), "selected".into()))
    });

    // Escape: the tenant's own Service lists its own pod, and a tenant policy targets it.
    api.apply(&service(
        "tenant",
        "tenant-gw",
        "127.0.0.4",
        &[tenant_gateway.port()],
        &json!({}),
    ));
    api.apply(&endpoints("tenant", "tenant-gw", &["tenant-app"]));
    api.apply(&policy(
        "tenant",
        "escape",
        "tenant-gw",
        &["web.test"],
        web.port(),
        tenant_gateway.port(),
    ));
    // Steer: a tenant policy for another hostname, hoping to catch pods elsewhere.
    api.apply(&policy(
        "tenant",
        "steer",
        "tenant-gw",
        &["bank.test"],
        bank.port(),
        tenant_gateway.port(),
    ));
    assert_cross_namespace_policy_refused(&api, bank.port(), tenant_gateway.port());
    wait("the tenant's pod still in the selected set", || {
        cgroup_ids(&agent).contains(&(tenant_pod.pod.id(), "selected".into()))
    });
    // The steering policy is accepted (it may select in its own namespace) ...
    wait("the steering policy accepted", || {
        condition(&api, "tenant", "steer", "Accepted").is_some_and(|c| c["status"] == "True")
    });
    // ... and computed with the same state the maps were written from.
    let app_routes = routes_of(&agent, app_pod.pod.id());
    assert!(
        app_routes.iter().all(|r| r["rule"] != "tenant/steer"),
        "a pod in another namespace is not steered: {app_routes:#?}"
    );
    assert_eq!(
        Probe::run(&app_pod.container, "tcp", &bank.addr.to_string()).reply(),
        "bank-direct",
        "the other namespace's pod reaches bank.test as before"
    );
    assert_eq!(
        Probe::run(&tenant_pod.container, "tcp", &web.addr.to_string()).reply(),
        "gateway",
        "the tenant's pod still goes through the platform's gateway"
    );
    assert!(
        !cgroup_ids(&agent).contains(&(tenant_pod.pod.id(), "exempt".into())),
        "and not exempt"
    );
    explain_names_the_reasons(&api, &agent, &node, &dns, &web);
}

/// `explain` on the tenant's pod says which policies redirect it and why, and where a
/// connection to web.test goes.
fn explain_names_the_reasons(
    api: &FakeApi,
    agent: &Agent,
    node: &Node,
    dns: &DnsServer,
    web: &Server,
) {
    let output = agent.cli(&[
        "explain",
        "tenant/tenant-app",
        &format!("web.test:{}", web.port()),
        "--kubeconfig",
        &api.kubeconfig().display().to_string(),
        "--trusted-namespace",
        "gw",
        "--cgroup-root",
        &node.root.path().display().to_string(),
        "--dns-server",
        &dns.addr(),
        "-o",
        "json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let explanation: Value = serde_json::from_slice(&output.stdout).expect("explain json");
    let policy = |name: &str| {
        explanation["policies"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["policy"] == name).cloned())
            .unwrap_or_else(|| panic!("{name} in {explanation:#}"))
    };
    let platform = policy("gw/platform");
    assert_eq!(platform["selects"], true, "{platform}");
    assert!(
        platform["why"]
            .as_str()
            .is_some_and(|w| w.contains("namespace tenant is labelled"))
    );
    let escape = policy("tenant/escape");
    assert_eq!(escape["selects"], false);
    assert!(
        escape["why"]
            .as_str()
            .is_some_and(|w| w.contains("exempt: the pod is an endpoint")),
        "{escape}"
    );
    let wide = policy("tenant/wide");
    assert_eq!(
        (wide["accepted"].clone(), wide["selects"].clone()),
        (json!(false), json!(false))
    );
    assert_eq!(explanation["cgroup"]["mode"], "selected");
    let verdict = explanation["host"]["verdict"].as_str().unwrap_or_default();
    assert!(
        verdict.contains("127.0.0.3") && verdict.contains("gw/platform"),
        "{explanation:#}"
    );
}

/// A tenant policy asking for other namespaces outright is not accepted, with an Event that
/// names the policy's UID.
fn assert_cross_namespace_policy_refused(api: &FakeApi, port: u16, gateway_port: u16) {
    let mut wide = policy(
        "tenant",
        "wide",
        "tenant-gw",
        &["bank.test"],
        port,
        gateway_port,
    );
    wide["spec"]["namespaceSelector"] = json!({});
    api.apply(&wide);
    wait("the wide policy is not accepted", || {
        condition(api, "tenant", "wide", "Accepted")
            .is_some_and(|c| c["status"] == "False" && c["reason"] == "NamespaceNotTrusted")
    });
    wait("an Event on the wide policy", || {
        api.events()
            .iter()
            .any(|e| e["reason"] == "NamespaceNotTrusted")
    });
    let event = api
        .events()
        .into_iter()
        .find(|e| e["reason"] == "NamespaceNotTrusted")
        .expect("the Event");
    let stored = api.get(POLICIES, "tenant", "wide");
    assert_eq!(
        event["regarding"]["uid"], stored["metadata"]["uid"],
        "the Event names the policy's UID, so kubectl describe shows it"
    );
}

/// A Gateway whose one listener (TCP on `port`, hostname `web.test`) is Programmed.
fn gateway_object(port: u16) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "egress", "namespace": "gw"},
        "spec": {"gatewayClassName": "istio", "listeners": [
            {"name": "web", "port": port, "protocol": "TCP", "hostname": "web.test"}]},
        "status": {"listeners": [{"name": "web", "attachedRoutes": 1,
            "conditions": [{"type": "Programmed", "status": "True"}]}]}
    })
}

fn probe(cgroup: &egress_tests::TestCgroup, addr: &str) -> Result<String, Option<i32>> {
    let probe = Probe::run(cgroup, "tcp", addr);
    if probe.ok {
        Ok(probe.reply)
    } else {
        Err(probe.errno)
    }
}

#[test]
fn fail_closed_holds_when_the_gateway_goes_and_across_a_restart() {
    if !kernel_tests_enabled() {
        return;
    }
    let node = Node::new();
    let direct = Server::start("127.0.0.2", "direct");
    let gateway = Server::bind("127.0.0.3", direct.port(), "gateway").expect("gateway port");
    let dns = DnsServer::start(60, &[("web.test", "127.0.0.2")], &[]);
    let api = FakeApi::start();
    platform(&api, &gateway);
    api.apply(&service(
        "gw",
        "egress-istio",
        "127.0.0.3",
        &[direct.port()],
        &json!({"gateway.networking.k8s.io/gateway-name": "egress"}),
    ));
    api.apply(&gateway_object(direct.port()));
    api.apply(&json!({
        "apiVersion": "egress-agent.io/v1alpha1", "kind": "EgressRedirectPolicy",
        "metadata": {"name": "closed", "namespace": "gw"},
        "spec": {"targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "egress"},
            "failClosed": true}
    }));
    api.apply(&pod("apps", "app", APP_UID, &json!({})));
    let app = node.pod(APP_UID);
    let mut agent = node.agent(
        &api,
        &["--dns-server", &dns.addr(), "--trusted-namespace", "gw"],
    );
    let target = direct.addr.to_string();
    wait("redirected through the Gateway's defaults", || {
        probe(&app.container, &target).as_deref() == Ok("gateway")
    });
    wait("the defaults are recorded in the status", || {
        api.get(POLICIES, "gw", "closed")["status"]["defaults"]["hostnames"] == json!(["web.test"])
    });

    api.delete(&gateway_object(direct.port()));
    wait("refused once the Gateway is gone", || {
        probe(&app.container, &target) == Err(Some(libc::EPERM))
    });
    wait("FailClosed says why", || {
        condition(&api, "gw", "closed", "FailClosed")
            .is_some_and(|c| c["status"] == "True" && c["reason"] == "TargetNotFound")
    });

    agent.stop_with(libc::SIGKILL);
    agent.spawn();
    wait("the restarted agent is ready", || {
        agent.admin_get("/ready").0 == 200
    });
    let until = Instant::now() + scaled(Duration::from_secs(3));
    while Instant::now() < until {
        assert_eq!(
            probe(&app.container, &target),
            Err(Some(libc::EPERM)),
            "still refused after a restart: the defaults come back from the status"
        );
    }

    // A Service target without a ClusterIP refuses too.
    api.apply(&service("gw", "headless", "", &[80], &json!({})));
    let mut headless = policy("gw", "headless", "headless", &["web.test"], 7, 7);
    headless["spec"]["failClosed"] = json!(true);
    api.apply(&headless);
    wait("a headless target refuses", || {
        condition(&api, "gw", "headless", "FailClosed")
            .is_some_and(|c| c["status"] == "True" && c["reason"] == "NoGatewayAddress")
    });
    assert_eq!(probe(&app.container, "127.0.0.2:7"), Err(Some(libc::EPERM)));
}

#[test]
fn one_agent_writes_status_and_each_event_exists_once() {
    if !kernel_tests_enabled() {
        return;
    }
    let gateway = Server::start("127.0.0.3", "gateway");
    let dns = DnsServer::start(60, &[("web.test", "127.0.0.2")], &[]);
    let api = FakeApi::start();
    platform(&api, &gateway);
    let (first, second) = (Node::new(), Node::new());
    let args = ["--dns-server", &dns.addr(), "--trusted-namespace", "gw"];
    let agents = [
        first.agent(&api, &args),
        second.agent_named("node-2", &api, &args),
    ];
    api.apply(&policy(
        "gw",
        "broken",
        "no-such-service",
        &["web.test"],
        9,
        9,
    ));
    wait("TargetNotFound Event", || {
        api.events().iter().any(|e| e["reason"] == "TargetNotFound")
    });
    wait("status written", || {
        condition(&api, "gw", "broken", "ResolvedRefs").is_some_and(|c| c["status"] == "False")
    });
    std::thread::sleep(scaled(Duration::from_secs(3)));
    let events: Vec<Value> = api
        .events()
        .into_iter()
        .filter(|e| e["reason"] == "TargetNotFound")
        .collect();
    assert_eq!(events.len(), 1, "one Event for the cluster: {events:#?}");
    let writers: Vec<bool> = agents
        .iter()
        .map(|a| a.log().contains("status updated"))
        .collect();
    assert_eq!(
        writers.iter().filter(|w| **w).count(),
        1,
        "exactly one agent wrote status: {writers:?}"
    );
    let lease = api.get(
        "/apis/coordination.k8s.io/v1/leases",
        "egress-agent-system",
        "egress-agent-status-writer",
    );
    let holder = if writers[0] { "node-1" } else { "node-2" };
    assert_eq!(
        lease["spec"]["holderIdentity"], holder,
        "the writer holds the Lease"
    );
}

#[test]
fn watches_survive_gone_failures_and_pages_without_losing_state() {
    if !kernel_tests_enabled() {
        return;
    }
    let node = Node::new();
    let gateway = Server::start("127.0.0.3", "gateway");
    let dns = DnsServer::start(60, &[("web.test", "127.0.0.2")], &[]);
    let api = FakeApi::start();
    platform(&api, &gateway);
    for n in 0..7 {
        api.apply(&namespace(&format!("filler-{n}"), &json!({})));
    }
    api.disable_group("gateway.networking.k8s.io");
    api.apply(&policy(
        "gw",
        "web",
        "egress-gw",
        &["web.test"],
        9,
        gateway.port(),
    ));
    api.apply(&pod("apps", "app", APP_UID, &json!({})));
    let app = node.pod(APP_UID);
    let agent = node.agent(
        &api,
        &[
            "--dns-server",
            &dns.addr(),
            "--trusted-namespace",
            "gw",
            "--list-page-size",
            "2",
        ],
    );
    wait("selected", || {
        cgroup_ids(&agent).contains(&(app.pod.id(), "selected".into()))
    });
    // The hostname's route arrives with the agent's first answer, possibly after the cgroup.
    wait("routed", || !agent.routes().is_empty());
    let routes = agent.routes();

    // The policy API fails for a while, and every watch is told its position is gone; the
    // check spans the retries (scaled: they take longer where time is scaled).
    api.fail("/apis/egress-agent.io", 404, 5);
    api.fail("/api/v1/pods", 500, 3);
    api.compact();
    api.expire_watches(true);
    let until = Instant::now() + scaled(Duration::from_secs(4));
    while Instant::now() < until {
        assert!(
            cgroup_ids(&agent).contains(&(app.pod.id(), "selected".into())),
            "failures never empty what the agent knows"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait("relisted and unchanged", || {
        agent.routes().len() == routes.len()
    });
    api.apply(&pod(
        "apps",
        "app",
        APP_UID,
        &json!({"egress-agent.io/redirect": "false"}),
    ));
    wait("changes after the relist still arrive", || {
        !cgroup_ids(&agent).iter().any(|(id, _)| *id == app.pod.id())
    });

    let requests = api.requests();
    let paged = requests
        .iter()
        .any(|r| r["path"] == "/api/v1/namespaces" && r["query"]["continue"].is_string());
    assert!(paged, "namespaces listed in pages of 2");
    for request in &requests {
        let path = request["path"].as_str().unwrap_or_default();
        assert!(
            path != "/api/v1/services" || request["query"]["labelSelector"].is_string(),
            "no cluster-wide Service watch: {request}"
        );
        assert!(
            path != "/apis/discovery.k8s.io/v1/endpointslices",
            "no cluster-wide EndpointSlice watch: {request}"
        );
        assert!(
            path != "/apis/gateway.networking.k8s.io/v1/gateways",
            "no Gateway LIST while discovery says the API is absent: {request}"
        );
    }
}

#[test]
fn a_selected_pod_without_a_cgroup_is_reported() {
    if !kernel_tests_enabled() {
        return;
    }
    let node = Node::new();
    let gateway = Server::start("127.0.0.3", "gateway");
    let dns = DnsServer::start(60, &[("web.test", "127.0.0.2")], &[]);
    let api = FakeApi::start();
    platform(&api, &gateway);
    api.apply(&policy(
        "gw",
        "web",
        "egress-gw",
        &["web.test"],
        9,
        gateway.port(),
    ));
    api.apply(&pod("apps", "ghost", APP_UID, &json!({})));
    let agent = node.agent(
        &api,
        &["--dns-server", &dns.addr(), "--trusted-namespace", "gw"],
    );
    agent.wait_status("the missing cgroup in status", |s| {
        s["agent"]["missingCgroups"].as_array().is_some_and(|m| {
            m.iter()
                .any(|p| p.as_str().is_some_and(|p| p.contains("apps/ghost")))
        })
    });
    let (code, metrics) = agent.admin_get("/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("egress_agent_pod_cgroups_missing 1"),
        "{metrics}"
    );
    wait("a PodCgroupNotFound Event on the pod", || {
        api.events().iter().any(|e| {
            e["reason"] == "PodCgroupNotFound"
                && e["regarding"]["kind"] == "Pod"
                && e["regarding"]["uid"] == APP_UID
        })
    });
}

#[test]
fn a_restart_during_a_dns_outage_keeps_every_route_in_kubernetes_mode() {
    if !kernel_tests_enabled() {
        return;
    }
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let node = Node::new();
        let web = Server::start("127.0.0.2", "direct");
        let gateway = Server::start("127.0.0.3", "gateway");
        let mut dns = DnsServer::start(1, &[("web.test", "127.0.0.2")], &[]);
        let api = FakeApi::start();
        platform(&api, &gateway);
        api.apply(&policy(
            "gw",
            "web",
            "egress-gw",
            &["web.test"],
            web.port(),
            gateway.port(),
        ));
        api.apply(&pod("apps", "app", APP_UID, &json!({})));
        let app = node.pod(APP_UID);
        let mut agent = node.agent(
            &api,
            &["--dns-server", &dns.addr(), "--trusted-namespace", "gw"],
        );
        let target = web.addr.to_string();
        wait("redirected", || {
            probe(&app.container, &target).as_deref() == Ok("gateway")
        });
        agent.stop_with(signal);
        dns.stop();
        agent.spawn();
        let (mut connections, mut direct) = (0, 0);
        // Scaled, to span the restart however slow it is.
        let until = Instant::now() + scaled(Duration::from_secs(8));
        while Instant::now() < until {
            connections += 1;
            if probe(&app.container, &target).as_deref() != Ok("gateway") {
                direct += 1;
            }
        }
        assert_eq!(
            direct, 0,
            "signal {signal}: {direct} of {connections} went direct"
        );
        assert!(agent.is_running(), "the agent runs while DNS is down");
    }
}
