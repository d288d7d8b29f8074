use super::*;

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_mins(5)));
    assert!(parse_duration("5 parsecs").is_err());
}
