use super::*;

#[test]
fn routes_round_trip_through_trie_keys() {
    for (dest, protocol) in [
        ("203.0.113.7/32", Protocol::Tcp),
        ("198.51.100.0/24", Protocol::Udp),
        ("2001:db8::/32", Protocol::Tcp),
        ("::ffff:192.0.2.1/128", Protocol::Udp),
    ] {
        let route = RouteMatch {
            protocol,
            port: 8443,
            dest: dest.parse().unwrap(),
        };
        let back = match trie_key(&route) {
            TrieKey::V4(key) => {
                assert_eq!(key.data().port_be, 8443_u16.to_be(), "network byte order");
                route_of_v4(&key)
            }
            TrieKey::V6(key) => route_of_v6(&key),
        };
        assert_eq!(back, Some(route), "{dest}");
    }
}

#[test]
fn targets_round_trip_and_keep_the_gateway_family() {
    for gateway in [
        None,
        Some("10.96.0.1"),
        Some("fd00::1"),
        Some("::ffff:10.0.0.1"),
    ] {
        let target = RouteTarget {
            gateway: gateway.map(|g| g.parse().unwrap()),
            gateway_port: 15443,
            fail_closed: gateway.is_none(),
        };
        let value = route_value(&target, 3, 9, 0b101);
        assert_eq!((value.rule_id, value.route_id, value.groups), (3, 9, 0b101));
        assert_eq!(target_of(&value), target, "{gateway:?}");
    }
}

#[test]
fn modes_round_trip() {
    for mode in [Mode::Selected(0b11), Mode::Exempt] {
        assert_eq!(mode_of(mode_value(mode)), Some(mode));
    }
    assert_eq!(mode_of(CgroupMode { mode: 7, groups: 0 }), None);
}

#[test]
fn names_are_cut_at_a_character_boundary_and_nul_terminated() {
    let long = format!("{}é", "a".repeat(62));
    let stored = rule_name_value(&long);
    assert_eq!(
        rule_name_of(&stored),
        "a".repeat(62),
        "é would not fit whole"
    );
    assert_eq!(stored.bytes[63], 0);
    assert_eq!(stored_rule_name(&long), rule_name_of(&stored));
    assert_eq!(
        host_label_of(&host_label_value("web.test +2")),
        "web.test +2"
    );
}
