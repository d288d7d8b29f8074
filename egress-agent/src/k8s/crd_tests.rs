use super::*;

#[test]
fn the_checked_in_crd_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crd.yaml");
    let checked_in = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{path}: {err}"));
    assert!(
        checked_in == crd_yaml(),
        "deploy/crd.yaml is stale: run `cargo run -p egress-agent -- crd > deploy/crd.yaml`"
    );
}

#[test]
fn the_schema_carries_validation() {
    let yaml = crd_yaml();
    for needle in [
        "x-kubernetes-validations",
        "targetRef must be a Gateway",
        "maxLength: 253",
        "pattern:",
        "maximum: 65535",
    ] {
        assert!(
            yaml.contains(needle),
            "CRD schema lacks {needle:?}:\n{yaml}"
        );
    }
}
