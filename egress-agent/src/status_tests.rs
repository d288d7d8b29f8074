use super::*;
use crate::dns::AddressStatus;

#[test]
fn the_document_round_trips_and_renders() {
    let document = StatusDocument {
        agent: AgentStatus {
            config_path: "/etc/egress-agent.yaml".into(),
            config_loaded: true,
            attached: true,
            routes: 2,
            conflicts: vec![ConflictStatus {
                destination: "web.test".into(),
                port: 443,
                protocol: Protocol::Tcp,
                winner: "a".into(),
                loser: "b".into(),
            }],
            ..AgentStatus::default()
        },
        hosts: vec![HostStatus {
            name: "web.test".into(),
            state: Health::Stale,
            stale: true,
            addresses: vec![AddressStatus {
                address: "203.0.113.1".parse().unwrap(),
                in_answer: false,
                expires_in_secs: -3.0,
                leaves_in_secs: 57.0,
            }],
            last_error: Some("timed out".into()),
            failures: 2,
            next_refresh_in_secs: 1.5,
        }],
        learned: vec![LearnedStatus {
            host: "*.cdn.test".into(),
            cgroup: "kubepods/pod1".into(),
            addresses: 3,
            expires_in_secs: 299.6,
        }],
    };
    let json = serde_json::to_value(&document).unwrap();
    assert_eq!(json["hosts"][0]["state"], "stale");
    assert_eq!(json["agent"]["conflicts"][0]["destination"], "web.test");
    assert_eq!(json["agent"]["conflicts"][0]["protocol"], "TCP");
    let back: StatusDocument = serde_json::from_value(json).unwrap();
    let text = render(&back);
    assert!(text.contains("203.0.113.1 (grace 57s)"), "{text}");
    assert!(text.contains("stale"), "{text}");
    assert!(text.contains("web.test      443    TCP"), "{text}");
    assert!(text.contains("LEARNED FROM ANSWERS"), "{text}");
    assert!(
        text.contains("*.cdn.test   kubepods/pod1   3           300s"),
        "{text}"
    );
}
