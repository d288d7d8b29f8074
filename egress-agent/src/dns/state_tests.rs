use std::collections::BTreeSet;

use super::*;

fn addr(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|err| panic!("{text}: {err}"))
}

fn answer(addresses: &[(&str, u32)]) -> Resolution {
    Resolution::Addresses(addresses.iter().map(|(a, ttl)| (addr(a), *ttl)).collect())
}

fn routed(state: &HostState) -> BTreeSet<IpAddr> {
    state.addresses.keys().copied().collect()
}

const TIMING: Timing = Timing {
    grace: Duration::from_mins(1),
    min_ttl: Duration::ZERO,
    max_ttl: Duration::from_hours(1),
};

#[test]
fn a_changed_answer_keeps_the_old_address_through_grace() {
    let t0 = Instant::now();
    let mut state = HostState::new(t0);
    state.answer(t0, &answer(&[("192.0.2.1", 10)]), &TIMING, 0.0);
    assert_eq!(state.next_refresh, t0 + Duration::from_secs(10));
    let t1 = t0 + Duration::from_secs(10);
    state.answer(t1, &answer(&[("192.0.2.2", 10)]), &TIMING, 0.0);
    assert_eq!(
        routed(&state),
        BTreeSet::from([addr("192.0.2.1"), addr("192.0.2.2")]),
        "old address in grace"
    );
    // The old address expired at t0+10 and leaves at t0+10+60.
    state.expire(t0 + Duration::from_secs(69), &TIMING);
    assert!(
        state.addresses.contains_key(&addr("192.0.2.1")),
        "still within grace"
    );
    state.expire(t0 + Duration::from_secs(71), &TIMING);
    assert_eq!(
        routed(&state),
        BTreeSet::from([addr("192.0.2.2")]),
        "grace over"
    );
}

#[test]
fn failures_keep_everything_and_mark_stale_until_recovery() {
    let t0 = Instant::now();
    let mut state = HostState::new(t0);
    state.answer(t0, &answer(&[("192.0.2.1", 1)]), &TIMING, 0.0);
    let much_later = t0 + Duration::from_hours(1);
    state.failure(much_later, "timed out".into(), &TIMING);
    state.expire(much_later + Duration::from_mins(10), &TIMING);
    assert_eq!(state.health, Health::Stale);
    assert_eq!(
        routed(&state),
        BTreeSet::from([addr("192.0.2.1")]),
        "nothing ages out during an outage"
    );
    assert_eq!(
        state.next_refresh,
        much_later + Duration::from_secs(1),
        "first retry after 1s"
    );
    for _ in 0..10 {
        state.failure(much_later, "timed out".into(), &TIMING);
    }
    assert_eq!(
        state.next_refresh,
        much_later + Duration::from_secs(30),
        "backoff capped"
    );
    state.answer(much_later, &answer(&[("192.0.2.1", 5)]), &TIMING, 0.0);
    assert_eq!(
        (
            state.health,
            state.last_error.clone(),
            state.consecutive_failures
        ),
        (Health::Fresh, None, 0)
    );
    assert_eq!(state.failures, 11, "failures stay counted");
}

#[test]
fn nxdomain_is_an_answer_and_ages_addresses_out() {
    let t0 = Instant::now();
    let mut state = HostState::new(t0);
    state.answer(t0, &answer(&[("192.0.2.1", 10)]), &TIMING, 0.0);
    state.answer(
        t0 + Duration::from_secs(10),
        &Resolution::NxDomain(5),
        &TIMING,
        0.0,
    );
    assert_eq!(state.health, Health::NxDomain);
    assert!(
        state.addresses.contains_key(&addr("192.0.2.1")),
        "kept through grace"
    );
    state.expire(t0 + Duration::from_secs(71), &TIMING);
    assert!(state.addresses.is_empty());
    assert_eq!(
        state.next_refresh,
        t0 + Duration::from_secs(15),
        "negative TTL honoured"
    );
}

#[test]
fn ttls_are_clamped_and_refreshes_jittered_but_at_least_a_second_apart() {
    let t0 = Instant::now();
    let timing = Timing {
        min_ttl: Duration::from_secs(5),
        max_ttl: Duration::from_mins(1),
        ..TIMING
    };
    let mut state = HostState::new(t0);
    state.answer(t0, &answer(&[("192.0.2.1", 1)]), &timing, 0.0);
    assert_eq!(
        state.next_refresh,
        t0 + Duration::from_secs(5),
        "raised to minTtl"
    );
    state.answer(t0, &answer(&[("192.0.2.1", 86_400)]), &timing, 0.0);
    assert_eq!(
        state.next_refresh,
        t0 + Duration::from_mins(1),
        "lowered to maxTtl"
    );
    state.answer(t0, &answer(&[("192.0.2.1", 100)]), &TIMING, 1.0);
    assert_eq!(
        state.next_refresh,
        t0 + Duration::from_secs(90),
        "up to 10% early"
    );
    state.answer(t0, &answer(&[("192.0.2.1", 0)]), &TIMING, 0.5);
    assert_eq!(
        state.next_refresh,
        t0 + Duration::from_secs(1),
        "TTL 0 refreshes every second"
    );
}

#[test]
fn a_stale_host_schedules_no_expiry_pass() {
    let t0 = Instant::now();
    let mut state = HostState::new(t0);
    state.answer(t0, &answer(&[("192.0.2.1", 1)]), &TIMING, 0.0);
    state.answer(
        t0 + Duration::from_secs(1),
        &answer(&[("192.0.2.2", 1)]),
        &TIMING,
        0.0,
    );
    assert!(
        state.next_expiry(&TIMING).is_some(),
        "192.0.2.1 leaves after its grace"
    );
    state.failure(t0 + Duration::from_secs(2), "timed out".into(), &TIMING);
    assert_eq!(
        state.next_expiry(&TIMING),
        None,
        "nothing ages out while stale, so no wake-up for it"
    );
}

#[test]
fn a_shorter_ttl_never_shortens_what_clients_cached() {
    let t0 = Instant::now();
    let mut state = HostState::new(t0);
    state.answer(t0, &answer(&[("192.0.2.1", 300)]), &TIMING, 0.0);
    state.answer(
        t0 + Duration::from_secs(1),
        &answer(&[("192.0.2.1", 5)]),
        &TIMING,
        0.0,
    );
    assert_eq!(
        state.addresses[&addr("192.0.2.1")].expires,
        t0 + Duration::from_mins(5)
    );
}
