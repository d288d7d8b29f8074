use super::*;

#[test]
fn tables_align_like_kubectl() {
    let text = table(
        &["A", "LONG-HEADER"],
        [vec!["value".to_owned(), "x".to_owned()]].into_iter(),
    );
    assert_eq!(text, "A       LONG-HEADER\nvalue   x\n");
}
