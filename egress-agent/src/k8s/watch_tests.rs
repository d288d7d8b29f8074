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
            "/apis/gateway.networking.k8s.io/v1/gateways" => {
                // A cluster without the Gateway API CRDs.
                let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                    "message": "the server could not find the requested resource"});
                let mut response = Response::new(Body::from(status.to_string().into_bytes()));
                *response.status_mut() = http::StatusCode::NOT_FOUND;
                send.send_response(response);
                continue;
            }
            "/api/v1/services" => list(
                "v1",
                "ServiceList",
                &json!([{
                    "metadata": {"name": "gw", "namespace": "gw"},
                    "spec": {"clusterIPs": ["10.96.0.7"], "ports": [{"port": 443}]}
                }]),
            ),
            "/apis/discovery.k8s.io/v1/endpointslices" => {
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
    let mut changes = start(&client, "node-1");
    let mut index = Index::default();
    let mut applier = Applier::default();
    let filled = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(change) = changes.recv().await {
            applier.apply(&mut index, change);
            if applier.all_synced() && index.pods.len() == 2 {
                return;
            }
        }
    })
    .await;
    assert!(filled.is_ok(), "index never filled: {index:#?}");

    let app = &index.pods[&("apps".to_owned(), "app".to_owned())];
    assert_eq!(
        (app.uid.as_str(), app.qos),
        ("uid-app", crate::k8s::model::QosClass::Guaranteed)
    );
    let late = &index.pods[&("apps".to_owned(), "late".to_owned())];
    assert_eq!(
        late.qos,
        crate::k8s::model::QosClass::BestEffort,
        "the watch event arrived"
    );
    assert_eq!(index.namespaces["apps"].labels["team"], "a");
    assert_eq!(
        index.policies[&("gw".to_owned(), "p".to_owned())].generation,
        3
    );
    assert_eq!(
        index.services[&("gw".to_owned(), "gw".to_owned())].cluster_ips,
        ["10.96.0.7".parse::<std::net::IpAddr>().unwrap()]
    );

    let seen = seen.lock().expect("seen").clone();
    let pod_list = seen
        .iter()
        .find(|(uri, _)| uri.starts_with("/api/v1/pods?") && !uri.contains("watch=true"))
        .expect("pod list");
    assert!(
        pod_list.0.contains("fieldSelector=spec.nodeName%3Dnode-1"),
        "only this node's pods: {}",
        pod_list.0
    );
    let namespace_list = seen
        .iter()
        .find(|(uri, _)| uri.starts_with("/api/v1/namespaces?"))
        .expect("namespace list");
    assert!(
        namespace_list.1.contains("PartialObjectMetadata"),
        "namespaces are metadata-only: {namespace_list:?}"
    );
}

#[test]
fn a_relist_drops_objects_deleted_while_disconnected() {
    let mut index = Index::default();
    let mut applier = Applier::default();
    let pod = |name: &str| crate::k8s::model::PodInfo {
        name: name.into(),
        namespace: "ns".into(),
        ..Default::default()
    };
    let key = |name: &str| ("ns".to_owned(), name.to_owned());
    for change in [
        Change::Pod(Update::Relist),
        Change::Pod(Update::Upsert(key("a"), pod("a"))),
        Change::Pod(Update::Upsert(key("b"), pod("b"))),
        Change::Pod(Update::Synced),
        // Reconnect: b was deleted meanwhile, so the relist no longer has it.
        Change::Pod(Update::Relist),
        Change::Pod(Update::Upsert(key("a"), pod("a"))),
        Change::Pod(Update::Synced),
    ] {
        applier.apply(&mut index, change);
    }
    assert_eq!(index.pods.keys().cloned().collect::<Vec<_>>(), [key("a")]);
    assert!(!applier.all_synced(), "other kinds have not synced");
}
