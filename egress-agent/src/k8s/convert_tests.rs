use super::*;

#[test]
fn gateways_read_listeners_and_ip_addresses() {
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "gateway-system"},
        "spec": {"gatewayClassName": "istio", "listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP", "hostname": "httpbin.org"},
            {"name": "tls", "port": 443, "protocol": "TLS"}
        ]},
        "status": {"addresses": [
            {"type": "Hostname", "value": "gw.example"},
            {"type": "IPAddress", "value": "10.96.1.2"},
            {"value": "10.96.1.3"}
        ], "listeners": [
            {"name": "http", "attachedRoutes": 0, "conditions": [{"type": "Programmed", "status": "True"}]},
            {"name": "tls", "attachedRoutes": 0, "conditions": [{"type": "Programmed", "status": "False"}]}
        ]}
    }))
    .expect("gateway json");
    let info = gateway(&object);
    assert_eq!(info.listeners.len(), 2);
    assert_eq!(info.listeners[0].hostname.as_deref(), Some("httpbin.org"));
    assert!(info.listeners[0].usable, "Programmed");
    assert!(
        !info.listeners[1].usable,
        "neither attached routes nor Programmed"
    );
    assert_eq!(
        info.addresses,
        [
            "10.96.1.2".parse::<IpAddr>().unwrap(),
            "10.96.1.3".parse().unwrap()
        ]
    );
}

#[test]
fn slices_keep_only_pod_targets() {
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "gw-abc", "namespace": "gs", "labels": {"kubernetes.io/service-name": "gw"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "gw-0", "namespace": "gs"}},
            {"addresses": ["10.0.0.2"], "targetRef": {"kind": "Node", "name": "n1"}},
            {"addresses": ["10.0.0.3"]}
        ]
    }))
    .expect("slice json");
    let info = endpoint_slice(&slice);
    assert_eq!(
        (info.service.as_str(), info.pods.clone()),
        ("gw", vec!["gw-0".to_owned()])
    );
    assert_eq!(info.addresses.len(), 3, "every endpoint address");
}

#[test]
fn a_static_pod_is_found_by_the_kubelets_uid() {
    let object: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "etcd-n1", "namespace": "kube-system", "uid": "api-uid",
            "annotations": {"kubernetes.io/config.mirror": "1b2c3d4e5f60718293a4b5c6d7e8f901"}},
        "spec": {"containers": []}
    }))
    .expect("pod json");
    let info = pod(&object);
    assert_eq!(info.uid, "api-uid");
    assert_eq!(info.cgroup_uid, "1b2c3d4e5f60718293a4b5c6d7e8f901");
}
