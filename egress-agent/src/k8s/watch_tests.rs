//! The watchers against a kube-rs tower-test API mock: what they ask for, and what reaches
//! the index.

use std::{
    pin::pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Request, Response};
use kube::{Client, client::Body};
use serde_json::json;
use tower_test::mock;

use super::*;
use crate::k8s::{apply::Applier, index::Index, refs::ReferenceWatches};

use egress_tests::scaled;

fn list(api_version: &str, kind: &str, items: &serde_json::Value) -> Vec<u8> {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "10"}, "items": items}).to_string().into_bytes()
}

/// Answers each list with fixed objects (the Gateway API is not installed: 404); answers the
/// first pod watch with one ADDED event and holds every other watch open.
async fn serve(
    handle: mock::Handle<Request<Body>, Response<Body>>,
    seen: Arc<Mutex<Vec<(String, String)>>>,
) {
    let mut handle = pin!(handle);
    let mut held = Vec::new();
    let mut pod_watches = 0;
    while let Some((request, send)) = handle.next_request().await {
        let uri = request.uri().to_string();
        let accept = request
            .headers()
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        seen.lock().expect("seen").push((uri.clone(), accept));
        let path = uri.split('?').next().unwrap_or_default().to_owned();
        if uri.contains("watch=true") {
            if path == "/api/v1/pods" && pod_watches == 0 {
                pod_watches += 1;
                let event = json!({"type": "ADDED", "object": {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "late", "namespace": "apps", "uid": "uid-late", "resourceVersion": "11"},
                    "spec": {"nodeName": "node-1", "containers": []},
                    "status": {"qosClass": "BestEffort", "phase": "Pending"}
                }});
                send.send_response(Response::new(Body::from(format!("{event}\n").into_bytes())));
            } else {
                held.push(send);
            }
            continue;
        }
        let body = match path.as_str() {
            "/api/v1/pods" => list(
                "v1",
                "PodList",
                &json!([{
                    "metadata": {"name": "app", "namespace": "apps", "uid": "uid-app", "labels": {"egress-agent.io/redirect": "true"}},
                    "spec": {"nodeName": "node-1", "containers": []},
                    "status": {"qosClass": "Guaranteed", "phase": "Running"}
                }]),
            ),
            "/api/v1/namespaces" => list(
                "meta.k8s.io/v1",
                "PartialObjectMetadataList",
                &json!([{
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                    "metadata": {"name": "apps", "labels": {"team": "a"}}
                }]),
            ),
            "/apis/egress-agent.io/v1alpha1/egressredirectpolicies" => list(
                "egress-agent.io/v1alpha1",
                "EgressRedirectPolicyList",
                &json!([{
                    "apiVersion": "egress-agent.io/v1alpha1", "kind": "EgressRedirectPolicy",
                    "metadata": {"name": "p", "namespace": "gw", "generation": 3},
                    "spec": {"targetRef": {"group": "", "kind": "Service", "name": "gw"}, "hostnames": ["example.com"]}
                }]),
            ),
            "/apis/gateway.networking.k8s.io/v1" => {
                // A cluster without the Gateway API CRDs: discovery says so.
                let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                    "message": "the server could not find the requested resource"});
                let mut response = Response::new(Body::from(status.to_string().into_bytes()));
                *response.status_mut() = http::StatusCode::NOT_FOUND;
                send.send_response(response);
                continue;
            }
            // Gateway Services by label: none here.
            "/api/v1/services" => list("v1", "ServiceList", &json!([])),
            // The policy's target, by name.
            "/api/v1/namespaces/gw/services" => list(
                "v1",
                "ServiceList",
                &json!([{
                    "metadata": {"name": "gw", "namespace": "gw"},
                    "spec": {"clusterIPs": ["10.96.0.7"], "ports": [{"port": 443}]}
                }]),
            ),
            "/apis/discovery.k8s.io/v1/namespaces/gw/endpointslices" => {
                list("discovery.k8s.io/v1", "EndpointSliceList", &json!([]))
            }
            other => panic!("unexpected request {other}"),
        };
        send.send_response(Response::new(Body::from(body)));
    }
}

#[tokio::test]
async fn watchers_list_then_watch_and_feed_the_index() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(serve(handle, seen.clone()));
    let client = Client::new(service, "default");
    let (tx, mut changes) = mpsc::unbounded_channel();
    let mut index = Index::default();
    let mut applier = Applier::default();
    for scope in start(&client, "node-1", Lists::Cached, &tx) {
        applier.expect(scope);
    }
    let mut references = ReferenceWatches::new(client, Lists::Cached, tx);
    let gw = ("gw".to_owned(), "gw".to_owned());
    let filled = tokio::time::timeout(scaled(Duration::from_secs(10)), async {
        while let Some(change) = changes.recv().await {
            if applier.apply(&mut index, change) {
                references.sync(&index.references(), &mut applier, &mut index);
            }
            if applier.all_synced() && index.pods.len() == 2 && index.services.contains_key(&gw) {
                return;
            }
        }
    })
    .await;
    assert!(filled.is_ok(), "index never filled: {index:#?}");

    let app = index
        .pods
        .get(&("apps".to_owned(), "app".to_owned()))
        .expect("app");
    assert_eq!(
        (app.uid.as_str(), app.qos),
        ("uid-app", crate::k8s::model::QosClass::Guaranteed)
    );
    let late = index
        .pods
        .get(&("apps".to_owned(), "late".to_owned()))
        .expect("late");
    assert_eq!(
        late.qos,
        crate::k8s::model::QosClass::BestEffort,
        "the watch event arrived"
    );
    let apps = index
        .namespaces
        .get(&(String::new(), "apps".to_owned()))
        .expect("ns");
    assert_eq!(apps.labels["team"], "a");
    assert_eq!(
        index
            .policies
            .get(&("gw".to_owned(), "p".to_owned()))
            .map(|p| p.generation),
        Some(3)
    );
    assert_eq!(
        index.services.get(&gw).map(|s| s.cluster_ips.clone()),
        Some(vec!["10.96.0.7".parse::<std::net::IpAddr>().unwrap()])
    );
    assert!(
        index.gateways.is_empty(),
        "no Gateway API: no Gateways, and synced"
    );

    assert_requests(&seen.lock().expect("seen"));
}

/// Only this node's pods, metadata-only namespaces, lists from the cache, Services only by
/// label or name, no cluster-wide slices, no Gateway LIST without the API.
fn assert_requests(seen: &[(String, String)]) {
    let lists = || seen.iter().filter(|(uri, _)| !uri.contains("watch=true"));
    let pod_list = lists()
        .find(|(uri, _)| uri.starts_with("/api/v1/pods?"))
        .expect("pod list");
    assert!(
        pod_list.0.contains("fieldSelector=spec.nodeName%3Dnode-1"),
        "only this node's pods: {}",
        pod_list.0
    );
    assert!(
        lists().all(|(uri, _)| !uri.contains('?') || uri.contains("resourceVersion=0")),
        "lists are served from the API server's cache: {seen:#?}"
    );
    let namespace_list = lists()
        .find(|(uri, _)| uri.starts_with("/api/v1/namespaces?"))
        .expect("namespace list");
    assert!(
        namespace_list.1.contains("PartialObjectMetadata"),
        "namespaces are metadata-only: {namespace_list:?}"
    );
    for (uri, _) in seen {
        if uri.starts_with("/api/v1/services?") {
            assert!(
                uri.contains("labelSelector="),
                "Services only by label: {uri}"
            );
        }
        assert!(
            !uri.starts_with("/apis/discovery.k8s.io/v1/endpointslices"),
            "no cluster-wide EndpointSlice watch: {uri}"
        );
        assert!(
            !uri.starts_with("/apis/gateway.networking.k8s.io/v1/gateways"),
            "discovery said the Gateway API is absent: no LIST: {uri}"
        );
    }
    assert!(
        seen.iter().any(
            |(uri, _)| uri.starts_with("/api/v1/namespaces/gw/services?")
                && uri.contains("fieldSelector=metadata.name%3Dgw")
        ),
        "the target Service is watched by name: {seen:#?}"
    );
}

fn pod_change(scope: Scope, update: Update) -> Change {
    Change { scope, update }
}

#[test]
fn a_relist_drops_objects_deleted_while_disconnected() {
    let mut index = Index::default();
    let mut applier = Applier::default();
    let pods = Scope {
        kind: Kind::Pods,
        id: 0,
    };
    applier.expect(pods);
    let pod = |name: &str| {
        Object::Pod(PodInfo {
            name: name.into(),
            namespace: "ns".into(),
            ..Default::default()
        })
    };
    let key = |name: &str| ("ns".to_owned(), name.to_owned());
    for update in [
        Update::Relist,
        Update::Upsert(key("a"), pod("a")),
        Update::Upsert(key("b"), pod("b")),
        Update::Synced,
        // Reconnect: b was deleted meanwhile, so the relist no longer has it.
        Update::Relist,
        Update::Upsert(key("a"), pod("a")),
        Update::Synced,
    ] {
        applier.apply(&mut index, pod_change(pods, update));
    }
    assert_eq!(
        index
            .pods
            .iter()
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>(),
        [key("a")]
    );
    assert!(applier.all_synced());
    let policies = Scope {
        kind: Kind::Policies,
        id: 0,
    };
    applier.expect(policies);
    assert!(
        !applier.all_synced(),
        "a started watch holds publishing until its first list"
    );
}

#[test]
fn a_namespace_change_without_local_pods_recomputes_nothing() {
    let mut index = Index::default();
    let mut applier = Applier::default();
    let namespaces = Scope {
        kind: Kind::Namespaces,
        id: 0,
    };
    let ns = |name: &str, team: &str| {
        Object::Namespace(NamespaceInfo {
            name: name.into(),
            labels: [("team".to_owned(), team.to_owned())].into(),
        })
    };
    let key = |name: &str| (String::new(), name.to_owned());
    assert!(!applier.apply(
        &mut index,
        pod_change(namespaces, Update::Upsert(key("far"), ns("far", "a")))
    ));
    index.pods.insert(
        ("near".into(), "p".into()),
        PodInfo {
            namespace: "near".into(),
            ..Default::default()
        },
    );
    assert!(applier.apply(
        &mut index,
        pod_change(namespaces, Update::Upsert(key("near"), ns("near", "a")))
    ));
    assert!(
        !applier.apply(
            &mut index,
            pod_change(namespaces, Update::Upsert(key("near"), ns("near", "a")))
        ),
        "unchanged"
    );
    assert_eq!(index.namespaces.len(), 2, "both stored");
}

/// A watcher whose every relist fails at its LIST, `failures` times: `Init` (sent before the
/// LIST), then the error, whose instants go to `failed_at`.
fn failing_relists(
    failures: usize,
    failed_at: Arc<Mutex<Vec<tokio::time::Instant>>>,
) -> impl futures_util::Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Send + 'static
{
    futures_util::stream::unfold(0, move |n| {
        let failed_at = failed_at.clone();
        async move {
            if n == 2 * failures {
                return None;
            }
            let event = if n % 2 == 0 {
                Ok(watcher::Event::Init)
            } else {
                failed_at
                    .lock()
                    .expect("failed_at")
                    .push(tokio::time::Instant::now());
                Err(watcher::Error::NoResourceVersion)
            };
            Some((event, n + 1))
        }
    })
}

/// kube-runtime's `default_backoff` reset at each relist's `Init`: retries came every second.
#[tokio::test(start_paused = true)]
async fn relists_that_keep_failing_back_off_more_and_more() {
    let failed_at = Arc::new(Mutex::new(Vec::new()));
    let (tx, mut changes) = mpsc::unbounded_channel();
    // Gateways, not pods: the restarts counter is process-wide, and the metrics test counts the
    // pods' restarts.
    spawn(
        failing_relists(8, failed_at.clone()),
        whole(Kind::Gateways),
        tx,
        |p| Object::Pod(convert::pod(p)),
    );
    let mut relists = 0;
    while let Some(change) = changes.recv().await {
        assert!(matches!(change.update, Update::Relist), "{change:?}");
        relists += 1;
    }
    assert_eq!(relists, 8);
    let failed_at = failed_at.lock().expect("failed_at");
    let initial = crate::k8s::backoff::INITIAL_DELAY;
    for (n, pair) in (0u32..).zip(failed_at.windows(2)) {
        let (gap, base) = (pair[1] - pair[0], initial * 2u32.pow(n));
        assert!(
            (base..=base * 2).contains(&gap),
            "retry {n} came after {gap:?}, not {base:?} to twice that"
        );
    }
}

#[test]
fn only_a_gone_resource_version_counts_as_a_desync() {
    let status = |code: u16| {
        Box::new(kube::core::Status {
            code,
            ..kube::core::Status::default()
        })
    };
    assert!(is_gone(&watcher::Error::WatchError(status(410))));
    assert!(is_gone(&watcher::Error::InitialListFailed(
        kube::Error::Api(status(410))
    )));
    assert!(!is_gone(&watcher::Error::InitialListFailed(
        kube::Error::Api(status(404))
    )));
    assert!(!is_gone(&watcher::Error::WatchError(status(500))));
    assert!(!is_gone(&watcher::Error::NoResourceVersion));
}
