use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn expr(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.to_owned(),
        operator: operator.to_owned(),
        values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
    }
}

#[test]
fn selectors_match_like_the_api_server() {
    let app = labels(&[("app", "web"), ("tier", "front")]);
    let cases = [
        (LabelSelector::default(), true),
        (
            LabelSelector {
                match_labels: Some(labels(&[("app", "web")])),
                ..Default::default()
            },
            true,
        ),
        (
            LabelSelector {
                match_labels: Some(labels(&[("app", "db")])),
                ..Default::default()
            },
            false,
        ),
        (
            LabelSelector {
                match_expressions: Some(vec![expr("tier", "In", &["front", "back"])]),
                ..Default::default()
            },
            true,
        ),
        (
            LabelSelector {
                match_expressions: Some(vec![expr("tier", "NotIn", &["front"])]),
                ..Default::default()
            },
            false,
        ),
        (
            LabelSelector {
                match_expressions: Some(vec![expr("zone", "NotIn", &["a"])]),
                ..Default::default()
            },
            true,
        ),
        (
            LabelSelector {
                match_expressions: Some(vec![expr("app", "Exists", &[])]),
                ..Default::default()
            },
            true,
        ),
        (
            LabelSelector {
                match_expressions: Some(vec![expr("app", "DoesNotExist", &[])]),
                ..Default::default()
            },
            false,
        ),
    ];
    for (index, (selector, expected)) in cases.into_iter().enumerate() {
        assert_eq!(
            matches(&selector, &app),
            expected,
            "case {index}: {selector:?}"
        );
    }
}
