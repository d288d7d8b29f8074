use super::*;

#[test]
fn v4_mapping_round_trips() {
    let mapped = v4_mapped([203, 0, 113, 7]);
    assert_eq!(v4_unmapped(&mapped), Some([203, 0, 113, 7]));
    let mut native = mapped;
    native[10] = 0;
    assert_eq!(v4_unmapped(&native), None, "not mapped: {native:?}");
}
