//! The backoff on tokio's paused clock: growth, reset only after a healthy period, the cap.

use std::time::Duration;

use tokio::time::advance;

use super::*;

/// Whether `delay` is the `n`th (from 0) of the default sequence before the cap: jitter puts it
/// in `[d, 2d]` with `d = INITIAL_DELAY × 2ⁿ`.
fn is_step(delay: Duration, n: u32) -> bool {
    let base = INITIAL_DELAY * 2u32.pow(n);
    (base..=base * 2).contains(&delay)
}

/// Fails `backoff`, then sleeps the delay it asks for, as the watch task does.
async fn fail(backoff: &mut WatchBackoff) -> Duration {
    let delay = backoff.failed();
    advance(delay).await;
    delay
}

#[tokio::test(start_paused = true)]
async fn failures_between_relists_keep_growing() {
    let mut backoff = WatchBackoff::default();
    for n in 0..6 {
        // A relist starts (`Init`) and its LIST fails: nothing tells the backoff it is healthy.
        advance(Duration::from_millis(50)).await;
        let delay = fail(&mut backoff).await;
        assert!(is_step(delay, n), "failure {n}: {delay:?}");
    }
    assert_eq!(backoff.failures(), 6);
}

#[tokio::test(start_paused = true)]
async fn a_watch_that_fails_soon_after_its_list_keeps_growing() {
    let mut backoff = WatchBackoff::default();
    for n in 0..5 {
        // The list completes, but the watch fails well before the healthy period ends.
        backoff.synced();
        advance(HEALTHY_AFTER / 2).await;
        let delay = fail(&mut backoff).await;
        assert!(is_step(delay, n), "failure {n}: {delay:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_healthy_period_starts_again_from_the_initial_delay() {
    let mut backoff = WatchBackoff::default();
    for _ in 0..5 {
        fail(&mut backoff).await;
    }
    assert!(is_step(backoff.failed(), 5));
    backoff.synced();
    advance(HEALTHY_AFTER).await;
    let delay = fail(&mut backoff).await;
    assert!(is_step(delay, 0), "reset: {delay:?}");
    assert_eq!(backoff.failures(), 1);
    assert!(is_step(fail(&mut backoff).await, 1), "and grows again");
}

#[tokio::test(start_paused = true)]
async fn time_without_a_completed_list_is_not_healthy() {
    let mut backoff = WatchBackoff::default();
    for _ in 0..3 {
        fail(&mut backoff).await;
    }
    // Long, but the watch never completed a list (a slow LIST that fails).
    advance(HEALTHY_AFTER * 10).await;
    assert!(is_step(backoff.failed(), 3));
}

#[tokio::test(start_paused = true)]
async fn the_delay_is_capped() {
    let mut backoff = WatchBackoff::default();
    let mut delays = Vec::new();
    for _ in 0..30 {
        delays.push(fail(&mut backoff).await);
    }
    assert!(delays.iter().all(|d| *d <= MAX_DELAY), "{delays:?}");
    // Capped, the delay is still spread by jitter: half the cap up to the cap.
    assert!(
        delays[10..].iter().all(|d| *d >= MAX_DELAY / 2),
        "{delays:?}"
    );
    assert!(
        delays[10..].windows(2).any(|w| w[0] != w[1]),
        "jittered: {delays:?}"
    );
}

#[test]
fn settings_are_clamped() {
    let backoff = WatchBackoff::new(Duration::ZERO, Duration::ZERO, Duration::ZERO);
    assert_eq!(backoff.max, INITIAL_DELAY_RANGE.0 * 2);
    assert_eq!(backoff.healthy_after, HEALTHY_AFTER_RANGE.0);
    let backoff = WatchBackoff::new(Duration::MAX, Duration::MAX, Duration::MAX);
    assert_eq!(backoff.max, MAX_DELAY_LIMIT);
    assert_eq!(backoff.healthy_after, HEALTHY_AFTER_RANGE.1);
}

#[tokio::test(start_paused = true)]
async fn a_clamped_initial_delay_is_where_the_sequence_starts() {
    let mut backoff = WatchBackoff::new(Duration::ZERO, MAX_DELAY, HEALTHY_AFTER);
    let delay = backoff.failed();
    assert!(
        (INITIAL_DELAY_RANGE.0..=INITIAL_DELAY_RANGE.0 * 2).contains(&delay),
        "{delay:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_gone_resource_version_relists_after_the_initial_delay_without_growing() {
    let mut backoff = WatchBackoff::default();
    fail(&mut backoff).await;
    fail(&mut backoff).await;
    for _ in 0..5 {
        // 410 Gone: the server answers; the relist waits the first step, every time.
        let delay = backoff.desynced();
        assert!(is_step(delay, 0), "{delay:?}");
        advance(delay).await;
        backoff.synced();
    }
    assert_eq!(backoff.failures(), 2, "a desync is not a failure");
    // A real failure afterwards carries on from where the failures were.
    let delay = fail(&mut backoff).await;
    assert!(is_step(delay, 2), "{delay:?}");
}
