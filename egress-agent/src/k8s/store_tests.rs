use std::collections::BTreeSet;

use super::*;

fn key(name: &str) -> ObjectKey {
    ("ns".to_owned(), name.to_owned())
}

#[test]
fn an_object_stays_while_any_scope_reports_it() {
    let mut store = Store::default();
    assert!(store.upsert(1, key("gw"), 1));
    assert!(
        !store.upsert(2, key("gw"), 1),
        "same value from another scope"
    );
    assert!(!store.remove(1, &key("gw")), "scope 2 still reports it");
    assert_eq!(store.get(&key("gw")), Some(&1));
    assert!(store.remove(2, &key("gw")));
    assert!(store.is_empty());
}

#[test]
fn a_relist_drops_only_what_that_scope_no_longer_sees() {
    let mut store = Store::default();
    store.upsert(1, key("a"), 1);
    store.upsert(1, key("b"), 2);
    store.upsert(2, key("b"), 2);
    let seen = BTreeSet::from([key("a")]);
    assert!(
        !store.retain_scope(1, &seen),
        "b is still reported by scope 2"
    );
    assert!(store.contains_key(&key("b")));
    assert!(store.forget(2), "b leaves with its last scope");
    assert_eq!(store.len(), 1);
    assert!(store.forget(1));
    assert!(store.is_empty());
}

#[test]
fn the_latest_report_wins() {
    let mut store = Store::default();
    store.upsert(1, key("svc"), "old");
    assert!(store.upsert(2, key("svc"), "new"));
    assert_eq!(store.get(&key("svc")), Some(&"new"));
}
