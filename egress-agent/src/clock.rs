//! `CLOCK_MONOTONIC` nanoseconds, the clock the programs stamp learned addresses with
//! (`bpf_ktime_get_ns`) and the agent stamps resolved ones with, so both survive an agent
//! restart (not a reboot, which bpffs does not survive either).

use std::time::{Duration, Instant};

/// Now, in `CLOCK_MONOTONIC` nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// One `Instant` and its `CLOCK_MONOTONIC` reading, taken once: every conversion goes through
/// it, so converting the same instant twice gives the same number.
fn base() -> (Instant, u64) {
    static BASE: std::sync::OnceLock<(Instant, u64)> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| (Instant::now(), monotonic_ns()))
}

/// An `Instant` in `CLOCK_MONOTONIC` nanoseconds.
pub fn instant_ns(at: Instant) -> u64 {
    let (base, base_ns) = base();
    if at >= base {
        base_ns.saturating_add(u64::try_from((at - base).as_nanos()).unwrap_or(u64::MAX))
    } else {
        base_ns.saturating_sub(u64::try_from((base - at).as_nanos()).unwrap_or(u64::MAX))
    }
}

/// `CLOCK_MONOTONIC` nanoseconds as an `Instant`.
pub fn ns_instant(ns: u64) -> Instant {
    let (base, base_ns) = base();
    if ns >= base_ns {
        base + Duration::from_nanos(ns - base_ns)
    } else {
        base.checked_sub(Duration::from_nanos(base_ns - ns))
            .unwrap_or(base)
    }
}

/// Seconds from `now_ns` to `at_ns` (negative when already past), for people.
#[expect(clippy::cast_precision_loss, reason = "seconds for people")]
pub fn secs_until(at_ns: u64, now_ns: u64) -> f64 {
    (i128::from(at_ns) - i128::from(now_ns)) as f64 / 1e9
}
