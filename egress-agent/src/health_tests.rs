use super::*;

#[test]
fn a_silent_or_ended_task_is_a_problem() {
    let health = Health::default();
    let dns = health.register("dns", Duration::from_millis(20));
    let watch = health.register("cgroup-watch", Duration::from_hours(1));
    assert!(health.problems().is_empty());
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(health.problems().len(), 1, "{:?}", health.problems());
    dns.beat();
    assert!(health.problems().is_empty());
    drop(watch);
    assert_eq!(health.problems(), ["cgroup-watch: ended"]);
}
