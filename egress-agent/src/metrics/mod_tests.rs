use super::*;

#[test]
fn the_exposition_is_openmetrics_with_every_family() {
    dns_query(QueryResult::Answer, 0.004);
    reconciled(false, 0.002);
    watch_restarted("pods");
    set_routes(crate::route::Source::Learned, 3);
    set_map_fill("addresses", 0.25);
    set_cgroups_missing(1);
    let text = render(None);
    for needle in [
        "# TYPE egress_agent_dns_queries counter",
        "egress_agent_dns_queries_total{result=\"answer\"} 1",
        "egress_agent_dns_query_duration_seconds_bucket",
        "egress_agent_reconcile_errors_total 1",
        "egress_agent_watch_restarts_total{kind=\"pods\"} 1",
        "egress_agent_routes{source=\"learned\"} 3",
        "egress_agent_map_fill_ratio{map=\"addresses\"} 0.25",
        "egress_agent_pod_cgroups_missing 1",
        "# EOF",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }
}

#[test]
fn the_classic_text_names_counters_by_their_samples() {
    let open = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total 3\n\
                # HELP x_seconds Time.\n# TYPE x_seconds histogram\n# UNIT x_seconds seconds\n\
                x_seconds_sum 1\n# EOF\n";
    let classic = to_prometheus_text(open);
    assert_eq!(
        classic,
        "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total 3\n\
         # HELP x_seconds Time.\n# TYPE x_seconds histogram\nx_seconds_sum 1\n"
    );
}

#[test]
fn every_family_has_a_series_in_the_exposition_of_every_family() {
    let text = exposition_of_every_family();
    let families: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    for needle in [
        "egress_agent_dns_queries",
        "egress_agent_redirected",
        "egress_agent_unselected_connections",
        "egress_agent_dns_answers_learned",
    ] {
        assert!(families.contains(&needle), "{needle} in\n{text}");
    }
    for family in families {
        assert!(
            text.lines()
                .any(|line| !line.starts_with('#') && line.starts_with(family)),
            "{family} has no series (a Metrics family not given one?) in\n{text}"
        );
    }
}
