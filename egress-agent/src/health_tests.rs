use super::*;

use egress_tests::scaled;

#[test]
fn a_silent_or_ended_task_is_a_problem() {
    // Long enough that the checks right after a registration or a beat never find the task
    // silent, however busy the machine.
    let max_silence = scaled(Duration::from_millis(250));
    let health = Health::default();
    let dns = health.register("dns", max_silence);
    let watch = health.register("cgroup-watch", Duration::from_hours(1));
    assert!(health.problems().is_empty());
    std::thread::sleep(max_silence * 2);
    assert_eq!(health.problems().len(), 1, "{:?}", health.problems());
    dns.beat();
    assert!(health.problems().is_empty());
    drop(watch);
    assert_eq!(health.problems(), ["cgroup-watch: ended"]);
}
