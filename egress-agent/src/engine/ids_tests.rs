use super::*;

#[test]
fn ids_stay_with_their_keys_and_freed_ids_are_reused() {
    let mut ids: Ids<&str> = Ids::new("rules", 1, 10);
    let first = ids.assign(&["a", "b"]).unwrap();
    assert_eq!(first, BTreeMap::from([("a", 1), ("b", 2)]));
    let second = ids.assign(&["b", "c"]).unwrap();
    assert_eq!(
        second,
        BTreeMap::from([("b", 2), ("c", 1)]),
        "b keeps 2; a's 1 is free again"
    );
}

#[test]
fn preferred_ids_win_when_free() {
    let mut ids: Ids<&str> = Ids::new("classes", 1, 10);
    ids.prefer("x", 7);
    ids.prefer("y", 7);
    ids.prefer("z", 99);
    let assigned = ids.assign(&["x", "y", "z"]).unwrap();
    assert_eq!(assigned["x"], 7);
    assert_ne!(assigned["y"], 7, "taken by x");
    assert!(assigned["z"] < 10, "out of range preferences are ignored");
}

#[test]
fn running_out_is_an_error() {
    let mut ids: Ids<u32> = Ids::new("slots", 1, 3);
    assert!(ids.assign(&[1, 2]).is_ok());
    assert_eq!(
        ids.assign(&[1, 2, 3]),
        Err(Exhausted {
            what: "slots",
            first: 1,
            limit: 3
        })
    );
}
