use super::*;

#[test]
fn addresses_and_prefixes_round_trip_ipv4_mapped() {
    for addr in ["203.0.113.7", "2001:db8::7", "::1"] {
        let addr: IpAddr = addr.parse().unwrap();
        assert_eq!(addr_of(addr_bytes(addr)), addr);
    }
    assert_eq!(
        addr_bytes("192.0.2.1".parse().unwrap())[10..],
        [0xff, 0xff, 192, 0, 2, 1]
    );
    for net in [
        "198.51.100.0/24",
        "10.0.0.0/8",
        "2001:db8::/32",
        "0.0.0.0/0",
    ] {
        let net: IpNet = net.parse().unwrap();
        let key = cidr_key(&net);
        assert_eq!(cidr_of(&key), Some(net), "{net}");
    }
    assert_eq!(cidr_key(&"10.0.0.0/8".parse().unwrap()).prefix_len(), 104);
}

#[test]
fn targets_round_trip_with_both_families_and_refusals() {
    let redirect = Target {
        action: Action::Redirect {
            gateways: Gateways {
                v4: Some("10.96.0.1".parse().unwrap()),
                v6: Some("fd00::1".parse().unwrap()),
            },
            port: 15443,
        },
        rule: 3,
        counter: 9,
    };
    let value = target_value(&redirect);
    assert_eq!(
        value.gateway_port_be,
        15443_u16.to_be(),
        "network byte order"
    );
    assert_eq!(target_of(&value), redirect);
    for reason in [Refusal::FailClosed, Refusal::Quic] {
        let refuse = Target {
            action: Action::Refuse(reason),
            rule: 1,
            counter: 2,
        };
        assert_eq!(target_of(&target_value(&refuse)), refuse);
    }
    let key = TargetKey {
        class: 2,
        set: 7,
        protocol: Protocol::Udp,
        port: 443,
    };
    assert_eq!(target_key_of(&target_key(&key)), Some(key));
}

#[test]
fn entries_and_sources_round_trip() {
    for entry in [Entry::Selected(3), Entry::Exempt] {
        assert_eq!(entry_of(entry_value(entry)), Some(entry));
    }
    assert_eq!(entry_of(CgroupEntry { kind: 7, class: 0 }), None);
    for source in [Source::Static, Source::Resolved, Source::Learned] {
        let entry = AddrEntry {
            set: 5,
            source,
            expires_ns: 42,
        };
        assert_eq!(addr_entry_of(&addr_value(&entry)), Some(entry));
    }
    let resolver: std::net::SocketAddr = "127.0.0.1:5353".parse().unwrap();
    assert_eq!(resolver_of(&resolver_key(resolver)), resolver);
}

#[test]
fn labels_are_cut_at_a_character_boundary_and_nul_terminated() {
    let long = format!("{}é", "a".repeat(254));
    let stored = label_value(&long);
    assert_eq!(label_of(&stored), "a".repeat(254), "é would not fit whole");
    assert_eq!(stored.bytes[255], 0);
    assert_eq!(stored_text(&long), label_of(&stored));
    assert_eq!(label_of(&label_value("web.test +2")), "web.test +2");
}
