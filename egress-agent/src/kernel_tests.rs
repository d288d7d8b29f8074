use super::*;

#[test]
fn releases_parse_and_compare() {
    for (text, version) in [
        ("5.10.0-32-amd64", Some((5, 10))),
        ("6.18.44-fc-v657", Some((6, 18))),
        ("6.12.117+deb13-amd64", Some((6, 12))),
        ("4.19.0", Some((4, 19))),
        ("weird", None),
    ] {
        assert_eq!(parse(text).version, version, "{text}");
    }
    assert!(parse("4.19.0").version < Some(MINIMUM));
    assert!(parse("5.10.0").version >= Some(MINIMUM));
}
