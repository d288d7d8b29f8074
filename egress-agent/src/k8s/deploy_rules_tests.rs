//! The `PrometheusRule` under `deploy/monitoring`: no cluster the tests run has the Prometheus
//! operator, and none would check `PromQL` or the agent's metric names. Each rule is an alert or a
//! recording rule with an expression whose brackets close, whose `egress_agent_*` series are
//! ones the agent exports (taken from its own registry) and whose `job="..."` is a
//! `PodMonitor`'s; an alert has a `for` duration Prometheus reads and a severity.

use std::collections::BTreeSet;

use serde_json::json;

use super::{Document, assert_none, assert_reported, deploy, items, of_kind, text};

/// What the agent's series are called.
const PREFIX: &str = "egress_agent_";

/// The series names a scrape of the agent can return: the sample lines of an exposition with
/// every family (a counter's `_total`, a histogram's `_bucket`, `_sum` and `_count`).
fn exported_series() -> BTreeSet<String> {
    crate::metrics::exposition_of_every_family()
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Whether `at` starts a word of `expr` (no name character before it).
fn starts_word(expr: &str, at: usize) -> bool {
    !expr[..at].chars().next_back().is_some_and(is_name_char)
}

/// The agent's series an expression names.
fn series_in(expr: &str) -> BTreeSet<&str> {
    expr.match_indices(PREFIX)
        .filter(|(at, _)| starts_word(expr, *at))
        .map(|(at, _)| {
            let len = expr[at..]
                .find(|c: char| !is_name_char(c))
                .unwrap_or(expr.len() - at);
            &expr[at..at + len]
        })
        .collect()
}

/// The values of the `job="..."` matchers in an expression.
fn jobs_in(expr: &str) -> Vec<&str> {
    const MATCHER: &str = "job=\"";
    expr.match_indices(MATCHER)
        .filter(|(at, _)| starts_word(expr, *at))
        .filter_map(|(at, _)| {
            let rest = &expr[at + MATCHER.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

/// Why the brackets of a `PromQL` expression do not pair up, if they do not. Strings and `#`
/// comments are skipped.
fn bracket_problem(expr: &str) -> Option<String> {
    let mut open: Vec<(usize, char)> = Vec::new();
    let (mut quote, mut escaped, mut comment) = (None, false, false);
    for (at, c) in expr.char_indices() {
        if comment {
            comment = c != '\n';
            continue;
        }
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && q != '`' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        let opener = match c {
            '"' | '\'' | '`' => {
                quote = Some(c);
                continue;
            }
            '#' => {
                comment = true;
                continue;
            }
            '(' | '[' | '{' => {
                open.push((at, c));
                continue;
            }
            ')' => '(',
            ']' => '[',
            '}' => '{',
            _ => continue,
        };
        match open.pop() {
            Some((_, o)) if o == opener => {}
            Some((o_at, o)) => return Some(format!("{c} at {at} closes {o} at {o_at}")),
            None => return Some(format!("{c} at {at} closes nothing")),
        }
    }
    if let Some(q) = quote {
        return Some(format!("a string opened with {q} is not closed"));
    }
    open.pop()
        .map(|(at, c)| format!("{c} at {at} is not closed"))
}

/// Whether Prometheus reads `text` as a duration: units `ms`, `s`, `m`, `h`, `d`, `w`, `y`
/// after each number (`1h30m`), or `0`.
fn is_duration(text: &str) -> bool {
    if text == "0" {
        return true;
    }
    let mut rest = text;
    while !rest.is_empty() {
        let number = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let after = &rest[number..];
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|unit| after.starts_with(unit));
        match unit {
            Some(unit) if number > 0 => rest = &after[unit.len()..],
            _ => return false,
        }
    }
    !text.is_empty()
}

/// What is wrong with each rule of a `PrometheusRule`, given the series the agent exports.
fn rule_problems(doc: &Document, exported: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (g, group) in items(&doc.value["spec"]["groups"]).enumerate() {
        if text(&group["name"]).is_empty() {
            problems.push(format!(
                "{}: spec.groups[{g}].name: missing",
                doc.describe()
            ));
        }
        for (r, rule) in items(&group["rules"]).enumerate() {
            let (alert, record) = (text(&rule["alert"]), text(&rule["record"]));
            let name = if alert.is_empty() { record } else { alert };
            let at = format!("{}: spec.groups[{g}].rules[{r}] ({name})", doc.describe());
            let mut problem = |what: String| problems.push(format!("{at}: {what}"));
            if alert.is_empty() == record.is_empty() {
                problem("needs exactly one of alert and record".to_owned());
            }
            let expr = text(&rule["expr"]);
            if expr.trim().is_empty() {
                problem("expr: missing".to_owned());
                continue;
            }
            if let Some(why) = bracket_problem(expr) {
                problem(format!("expr: brackets: {why}"));
            }
            for series in series_in(expr) {
                if !exported.contains(series) {
                    problem(format!(
                        "expr: {series} is not a series the agent exports (it exports {})",
                        exported.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            if let Some(duration) = rule.get("for")
                && !duration.as_str().is_some_and(is_duration)
            {
                problem(format!("for: {duration} is not a Prometheus duration"));
            }
            if !alert.is_empty() && text(&rule["labels"]["severity"]).is_empty() {
                problem("labels.severity: missing".to_owned());
            }
        }
    }
    problems
}

/// The `job="..."` an expression matches is a `PodMonitor`'s job (the operator names it
/// `<namespace>/<name>`): any other matches no series, and an alert on `up` would never fire.
fn job_problems(docs: &[Document]) -> Vec<String> {
    let jobs: BTreeSet<String> = of_kind(docs, "PodMonitor")
        .map(|monitor| format!("{}/{}", monitor.namespace(), monitor.name()))
        .collect();
    let mut problems = Vec::new();
    for doc in of_kind(docs, "PrometheusRule") {
        for group in items(&doc.value["spec"]["groups"]) {
            for rule in items(&group["rules"]) {
                for job in jobs_in(text(&rule["expr"])) {
                    if !jobs.contains(job) {
                        problems.push(format!(
                            "{}: {}{}: job {job:?} is no PodMonitor's (those are {jobs:?})",
                            doc.describe(),
                            text(&rule["alert"]),
                            text(&rule["record"])
                        ));
                    }
                }
            }
        }
    }
    problems
}

// --- deploy/ as checked in -----------------------------------------------------------------------

#[test]
fn alert_rules_are_well_formed_and_use_exported_series() {
    let exported = exported_series();
    let rules: Vec<&Document> = of_kind(deploy(), "PrometheusRule").collect();
    assert_eq!(rules.len(), 1, "PrometheusRules under deploy/");
    let problems: Vec<String> = rules
        .iter()
        .flat_map(|doc| rule_problems(doc, &exported))
        .collect();
    assert_none("PrometheusRules under deploy/", &problems);
    let used: BTreeSet<&str> = rules
        .iter()
        .flat_map(|doc| items(&doc.value["spec"]["groups"]))
        .flat_map(|group| items(&group["rules"]))
        .flat_map(|rule| series_in(text(&rule["expr"])))
        .collect();
    assert!(used.len() >= 5, "the alerts use only {used:?}");
}

#[test]
fn alerts_match_a_podmonitors_job() {
    assert_none("alert jobs under deploy/", &job_problems(deploy()));
}

// --- each check fails when it should -------------------------------------------------------------

/// A `PrometheusRule` with one group of these rules.
fn rule_doc(rules: &serde_json::Value) -> Document {
    Document {
        file: "test.yaml".to_owned(),
        value: json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": "test", "namespace": "egress-agent-system"},
            "spec": {"groups": [{"name": "test", "rules": rules}]},
        }),
    }
}

#[test]
fn a_rule_on_a_series_the_agent_does_not_export_is_reported() {
    let exported = exported_series();
    let doc = rule_doc(&json!([
        {"alert": "A", "expr": "egress_agent_no_such_total > 0", "labels": {"severity": "warning"}},
        // The family's name, not its counter's samples.
        {"alert": "B", "expr": "rate(egress_agent_dns_queries[5m]) > 0", "labels": {"severity": "warning"}},
        {"record": "x:rate5m", "expr": "rate(egress_agent_dns_queries_total[5m])"},
    ]));
    let problems = rule_problems(&doc, &exported);
    assert_reported(
        &problems,
        &["rules[0] (A)", "egress_agent_no_such_total is not a series"],
    );
    assert_reported(
        &problems,
        &["rules[1] (B)", "egress_agent_dns_queries is not a series"],
    );
    assert_eq!(problems.len(), 2, "{problems:#?}");
    // The datapath's series are known without pinned maps.
    for series in [
        "egress_agent_unselected_connections_total",
        "egress_agent_redirected_total",
        "egress_agent_dns_query_duration_seconds_bucket",
        "egress_agent_map_fill_ratio",
    ] {
        assert!(exported.contains(series), "{series} not in {exported:?}");
    }
}

#[test]
fn a_malformed_rule_is_reported() {
    let doc = rule_doc(&json!([
        {"alert": "Both", "record": "both", "expr": "up", "labels": {"severity": "warning"}},
        {"alert": "NoExpr", "labels": {"severity": "warning"}},
        {"alert": "Open", "expr": "sum(rate(up[5m])", "labels": {"severity": "warning"}},
        {"alert": "Crossed", "expr": "sum(up[5m)]", "labels": {"severity": "warning"}},
        {"alert": "Minutes", "expr": "up == 0", "for": "5 minutes", "labels": {"severity": "warning"}},
        {"alert": "Quiet", "expr": "up == 0", "for": "5m"},
    ]));
    let problems = rule_problems(&doc, &exported_series());
    assert_reported(&problems, &["(Both)", "exactly one of alert and record"]);
    assert_reported(&problems, &["(NoExpr)", "expr: missing"]);
    assert_reported(&problems, &["(Open)", "( at 3 is not closed"]);
    assert_reported(&problems, &["(Crossed)", ") at 9 closes [ at 6"]);
    assert_reported(
        &problems,
        &["(Minutes)", "\"5 minutes\" is not a Prometheus duration"],
    );
    assert_reported(&problems, &["(Quiet)", "labels.severity: missing"]);
    assert_eq!(problems.len(), 6, "{problems:#?}");
}

#[test]
fn brackets_in_strings_and_comments_do_not_count() {
    for expr in [
        r#"up{job="a)"} # closing ( in a comment"#,
        "sum by (node) (rate(x{path=~'/[a-z]+'}[5m]))",
        r#"x{l="\")"}"#,
    ] {
        assert_eq!(bracket_problem(expr), None, "{expr}");
    }
    assert!(bracket_problem(r#"up{job="a}"#).is_some());
}

#[test]
fn durations_are_prometheus_durations() {
    for good in ["0", "5m", "1h30m", "500ms", "2w", "1y"] {
        assert!(is_duration(good), "{good}");
    }
    for bad in ["", "5", "m", "5 m", "1.5h", "5mm", "-5m"] {
        assert!(!is_duration(bad), "{bad}");
    }
}

#[test]
fn an_alert_on_another_job_is_reported() {
    let mut docs = deploy().to_vec();
    docs.push(rule_doc(&json!([
        {"alert": "Gone", "expr": "up{job=\"egress-agent-system/agent\"} == 0", "labels": {"severity": "critical"}},
    ])));
    assert_reported(
        &job_problems(&docs),
        &[
            "test.yaml",
            "Gone",
            "job \"egress-agent-system/agent\" is no PodMonitor's",
        ],
    );
    assert_eq!(jobs_in(r#"up{myjob="x", job="y"}"#), ["y"]);
}
