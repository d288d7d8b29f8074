use super::*;

#[test]
fn hosts_and_ports_parse() {
    let cases = [
        ("api.example.com", "api.example.com", None),
        ("api.example.com:443", "api.example.com", Some(443)),
        ("10.0.0.1:80", "10.0.0.1", Some(80)),
        ("2001:db8::1", "2001:db8::1", None),
        ("[2001:db8::1]:443", "2001:db8::1", Some(443)),
    ];
    for (text, host, port) in cases {
        let parsed: HostPort = text.parse().unwrap();
        assert_eq!((parsed.host.as_str(), parsed.port), (host, port), "{text}");
    }
    assert!("x:notaport".parse::<HostPort>().is_err());
}
