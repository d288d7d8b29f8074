use super::*;

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_mins(5)));
    assert!(parse_duration("5 parsecs").is_err());
}

#[test]
fn listen_addresses_parse_and_off_turns_an_endpoint_off() {
    assert_eq!(parse_listen("off"), Ok(Listen::Off));
    assert_eq!(
        parse_listen("127.0.0.1:9901"),
        Ok(Listen::At("127.0.0.1:9901".parse().unwrap()))
    );
    assert_eq!(
        parse_listen("[::1]:9090"),
        Ok(Listen::At("[::1]:9090".parse().unwrap()))
    );
    assert!(parse_listen("localhost").is_err());
    assert!(parse_listen("of").is_err());
}
