//! The DNS name hash that keys `PATTERNS`, computed the same way by the learning program and by
//! the agent.
//!
//! A name is hashed label by label, from the right: `acc = seed`, then for each label from the
//! last to the first `acc = combine(acc, label_hash(label))`. Every suffix of a name therefore
//! has its own hash on the way, which is what wildcards need: `*.example.com` is stored as
//! `combine(hash("example.com"), STAR)`, and a query name `a.b.example.com` matches it when
//! `combine(hash of one of its proper suffixes, STAR)` is stored. The apex `example.com` has no
//! label before the suffix, so it never matches the wildcard (Gateway API semantics).
//!
//! Labels are compared case-insensitively (ASCII). A label's hash is FNV-1a over its bytes
//! padded with zeros to [`LABEL_MAX`] (so the learning program hashes every label with the same
//! fixed, branch-free loop), and labels are combined with a multiply-rotate step; the seed is
//! random per installation (`Config::name_seed`), so names that collide cannot be prepared in
//! advance.

/// FNV-1a 64-bit offset basis.
const BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// The longest label (RFC 1035).
pub const LABEL_MAX: usize = 63;

/// The hash of the label `*`.
pub const STAR: u64 = label_hash(b"*");

/// `byte` in ASCII lower case, without a branch (the learning program runs this per byte).
#[inline]
#[must_use]
pub const fn lower(byte: u8) -> u8 {
    let offset = byte.wrapping_sub(b'A') as u64;
    let upper = (offset.wrapping_sub(26) >> 63) as u8;
    byte | (upper << 5)
}

/// One step of a label's hash: `hash` so far, then `byte`.
#[inline]
#[must_use]
pub const fn label_step(hash: u64, byte: u8) -> u64 {
    (hash ^ lower(byte) as u64).wrapping_mul(PRIME)
}

/// The hash a label starts from.
#[inline]
#[must_use]
pub const fn label_start() -> u64 {
    BASIS
}

/// The hash of a suffix `label.rest`, from the hash of `rest` and the hash of `label`.
#[inline]
#[must_use]
pub const fn combine(rest: u64, label: u64) -> u64 {
    (rest.rotate_left(27) ^ label).wrapping_mul(PRIME) ^ (rest >> 31)
}

/// The hash of one label: its bytes, then zeros up to [`LABEL_MAX`] (longer labels are cut).
#[must_use]
pub const fn label_hash(label: &[u8]) -> u64 {
    let mut hash = BASIS;
    let mut index = 0;
    while index < LABEL_MAX {
        let byte = if index < label.len() { label[index] } else { 0 };
        hash = label_step(hash, byte);
        index += 1;
    }
    hash
}

/// The hash of a dotted name (a trailing dot is ignored; `*` is a label like any other).
#[must_use]
pub fn hash(seed: u64, name: &str) -> u64 {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.rsplit('.').fold(seed, |acc, label| {
        combine(acc, label_hash(label.as_bytes()))
    })
}
