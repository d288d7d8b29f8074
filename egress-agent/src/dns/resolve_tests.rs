use super::*;

#[test]
fn reads_nameservers_from_resolv_conf() {
    let text =
        "search cluster.local\nnameserver 10.96.0.10\nnameserver fe80::1%eth0\noptions ndots:5\n";
    assert_eq!(
        parse_resolv_conf(text),
        vec![
            "10.96.0.10:53".parse().unwrap(),
            "[fe80::1]:53".parse().unwrap()
        ]
    );
}

#[test]
fn combines_families() {
    let fam = |addresses: Vec<(IpAddr, u32)>, nxdomain| Family {
        addresses,
        nxdomain,
        negative_ttl: Some(7),
    };
    let v4 = fam(vec![("192.0.2.1".parse().unwrap(), 30)], false);
    let v6 = fam(vec![("2001:db8::1".parse().unwrap(), 10)], false);
    let Resolution::Addresses(both) = combine(&v4, &v6) else {
        panic!("addresses expected")
    };
    assert_eq!(both.len(), 2);
    assert_eq!(
        combine(&fam(vec![], true), &fam(vec![], true)),
        Resolution::NxDomain(7)
    );
    assert_eq!(
        combine(&fam(vec![], false), &fam(vec![], false)),
        Resolution::NoData(7)
    );
}
