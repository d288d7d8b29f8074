extern crate std;

use std::{borrow::ToOwned as _, string::String, vec::Vec};

use super::*;
use crate::abi::Visitor as _;

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
fn the_abi_is_the_last_entry_of_its_history() {
    let fingerprint = abi::fingerprint();
    let last = abi::HISTORY.last().copied();
    assert_eq!(
        last,
        Some((ABI_VERSION, fingerprint)),
        "the ABI changed (fingerprint {fingerprint:#x}): bump ABI_VERSION (now {ABI_VERSION}), \
         append (the new version, {fingerprint:#x}) to abi::HISTORY, and teach the agent's \
         datapath::migrate to carry kernel-written entries over from the old layout"
    );
    assert!(
        abi::HISTORY
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 != w[1].1),
        "versions grow and each layout is new: {:?}",
        abi::HISTORY
    );
}

type Fields = Vec<(String, usize, usize)>;

/// Checks that each type's fields, in offset order, cover it byte for byte: a field left out of
/// `abi::walk` would leave a gap (the types have no implicit padding).
#[derive(Default)]
struct Coverage {
    /// Each type: name, size, fields (name, offset, size).
    types: Vec<(String, usize, Fields)>,
    constants: Vec<String>,
}

impl abi::Visitor for Coverage {
    fn ty(&mut self, name: &str, size: usize) {
        self.types.push((name.to_owned(), size, Vec::new()));
    }

    fn field(&mut self, name: &str, offset: usize, size: usize) {
        let (_, _, fields) = self.types.last_mut().expect("a type first");
        fields.push((name.to_owned(), offset, size));
    }

    fn constant(&mut self, name: &str, _value: u64) {
        self.constants.push(name.to_owned());
    }
}

#[test]
fn the_fingerprint_covers_every_byte_of_every_type() {
    let mut coverage = Coverage::default();
    abi::walk(&mut coverage);
    assert_eq!(coverage.types.len(), 16, "every key and value type");
    for (name, size, mut fields) in coverage.types {
        fields.sort_by_key(|(_, offset, _)| *offset);
        let mut end = 0;
        for (field, offset, field_size) in &fields {
            assert_eq!(
                *offset, end,
                "{name}: a gap or overlap before {field}: {fields:?}"
            );
            end = offset + field_size;
        }
        assert_eq!(
            end, size,
            "{name}: bytes after its last listed field: {fields:?}"
        );
    }
    let mut names = coverage.constants.clone();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), coverage.constants.len(), "each constant once");
}

mod before {
    #[repr(C)]
    pub(super) struct Pair {
        pub(super) a: u32,
        pub(super) b: u32,
    }
}

mod after {
    #[repr(C)]
    pub(super) struct Pair {
        pub(super) b: u32,
        pub(super) a: u32,
    }
}

#[test]
fn swapping_two_fields_changes_the_fingerprint() {
    let hash = |swapped: bool| {
        let mut v = abi::Hasher(0);
        if swapped {
            use after::Pair;
            abi::layout!(v, Pair { a, b });
        } else {
            use before::Pair;
            abi::layout!(v, Pair { a, b });
        }
        v.0
    };
    assert_ne!(hash(false), hash(true));
}
