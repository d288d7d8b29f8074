use super::*;

#[test]
fn v4_mapping_round_trips() {
    let mapped = v4_mapped([203, 0, 113, 7]);
    assert_eq!(v4_unmapped(&mapped), Some([203, 0, 113, 7]));
    let mut native = mapped;
    native[10] = 0;
    assert_eq!(v4_unmapped(&native), None, "not mapped: {native:?}");
}

#[test]
fn names_hash_case_insensitively_and_wildcards_cover_proper_subdomains_only() {
    let seed = 0x1234_5678_9abc_def0;
    assert_eq!(
        name::hash(seed, "Example.COM"),
        name::hash(seed, "example.com.")
    );
    assert_ne!(
        name::hash(seed, "example.com"),
        name::hash(seed, "example.org")
    );
    assert_ne!(
        name::hash(seed, "example.com"),
        name::hash(seed ^ 1, "example.com")
    );
    // What the kernel computes for `a.b.example.com`, suffix by suffix from the right.
    let label = |text: &str| name::label_hash(text.as_bytes());
    let rest = name::hash(seed, "example.com");
    let b = name::combine(rest, label("b"));
    let full = name::combine(b, label("A"));
    assert_eq!(full, name::hash(seed, "a.b.example.com"));
    let wildcard = name::hash(seed, "*.example.com");
    assert_eq!(
        name::combine(rest, name::STAR),
        wildcard,
        "a proper suffix matches"
    );
    assert_ne!(name::combine(b, name::STAR), wildcard);
    assert_ne!(
        name::hash(seed, "example.com"),
        wildcard,
        "the apex does not"
    );
    for byte in 0..=255_u8 {
        assert_eq!(name::lower(byte), byte.to_ascii_lowercase(), "{byte}");
    }
}

#[test]
fn the_map_layout_matches_its_abi_version() {
    let digest = maps::digest(&maps::ALL);
    assert_eq!(
        digest,
        maps::FINGERPRINT,
        "the map definitions changed (digest {digest:#x}): bump ABI_VERSION (now {ABI_VERSION}), \
         set maps::FINGERPRINT to the new digest, and teach the agent's datapath::migrate to \
         carry kernel-written entries over from the old layout"
    );
}
