//! Reading a DNS response (RFC 1035 §4.1) copied into the per-CPU scratch buffer.
//!
//! Written for the 5.10 verifier (no `bpf_loop`): every loop is bounded by a constant, every
//! index is masked into the 4096-byte buffer, and the per-byte work is branch-free (bytes past a
//! label's end are masked to zero rather than skipped), so the verifier walks each loop once
//! per path instead of once per combination of branches. Offsets past the message's end read
//! stale buffer bytes, which the bounds checks against the message length make harmless.
//!
//! * The question name is hashed label by label as [`egress_common::name`] defines it, which
//!   keys the patterns (exact names and wildcards).
//! * Names in the answer (owners and CNAME targets, usually compressed) are identified by a
//!   cheaper hash of each label's length and first [`IDENTITY_BYTES`] bytes, following
//!   compression pointers. Two different names that agree there would only widen what a scope
//!   learns for its own connections, never another scope's.

use egress_common::{
    limits::DNS_MESSAGE,
    name::{self, LABEL_MAX},
};

/// Index mask of the scratch buffer.
const MASK: usize = DNS_MESSAGE - 1;
/// Labels of the question name that are matched against the patterns.
pub(crate) const MAX_LABELS: usize = egress_common::limits::DNS_LABELS;
/// Steps of a name walk in the answer: one per label or compression pointer. Real names take a
/// handful (an owner is usually one pointer to the question); a longer one makes the message
/// unparsed, and the agent's own resolution covers it. The verifier's budget on 5.10 (8192
/// pending branches on one path) is what bounds this and [`MAX_ANSWERS`](crate::learn).
const NAME_STEPS: u32 = 12;
/// Bytes of each label that a name's identity hash reads.
pub(crate) const IDENTITY_BYTES: u32 = 16;

/// The scratch buffer holding the message.
pub(crate) type Buffer = [u8; DNS_MESSAGE];

/// The byte at `offset`.
#[inline(always)]
pub(crate) fn byte(buf: &Buffer, offset: u32) -> u8 {
    buf[offset as usize & MASK]
}

/// The big-endian `u16` at `offset`.
#[inline(always)]
pub(crate) fn u16_at(buf: &Buffer, offset: u32) -> u16 {
    u16::from_be_bytes([byte(buf, offset), byte(buf, offset + 1)])
}

/// The big-endian `u32` at `offset`.
#[inline(always)]
pub(crate) fn u32_at(buf: &Buffer, offset: u32) -> u32 {
    u32::from_be_bytes([
        byte(buf, offset),
        byte(buf, offset + 1),
        byte(buf, offset + 2),
        byte(buf, offset + 3),
    ])
}

/// The hash of the label of `len` bytes at `start`, as [`egress_common::name::label_hash`]
/// computes it: every one of [`LABEL_MAX`] bytes is read, those past the label as zero.
#[inline(always)]
fn label_hash(buf: &Buffer, start: u32, len: u32) -> u64 {
    let len = opaque(len);
    let mut hash = name::label_start();
    for index in 0..LABEL_MAX as u32 {
        hash = name::label_step(hash, byte(buf, start + index) & inside(index, len));
    }
    hash
}

/// A label's contribution to a name's identity: its length and first bytes.
#[inline(always)]
fn identity_part(buf: &Buffer, start: u32, len: u32) -> u64 {
    let mut hash = name::label_step(name::label_start(), len as u8);
    let len = opaque(len);
    for index in 0..IDENTITY_BYTES {
        hash = name::label_step(hash, byte(buf, start + index) & inside(index, len));
    }
    hash
}

/// `len` as a value the compiler knows nothing about (the verifier still knows its bounds): so
/// that [`inside`] stays arithmetic. Knowing `len < 2^63`, the compiler would turn it into a
/// comparison, which the BPF backend emits as a branch, which the verifier would then follow
/// once per possible label length.
#[inline(always)]
fn opaque(len: u32) -> u64 {
    let len = u64::from(len);
    // SAFETY: reading a local.
    unsafe { core::ptr::read_volatile(&raw const len) }
}

/// `0xff` when `index < len`, else 0, without a branch (for `len < 2^63`).
#[inline(always)]
fn inside(index: u32, len: u64) -> u8 {
    let below = (u64::from(index).wrapping_sub(len) >> 63) as u8;
    0_u8.wrapping_sub(below)
}

/// The question name: its identity and pattern hashes (the label hashes go to the caller's
/// array, leftmost first), and where it ends.
pub(crate) struct Question {
    /// The name's identity (for following the answer's CNAME chain).
    pub(crate) identity: u64,
    /// How many labels.
    pub(crate) count: usize,
    /// The offset just past the name.
    pub(crate) end: u32,
}

/// Reads the question name at `offset` (it cannot be compressed: nothing precedes it).
#[inline(always)]
pub(crate) fn question(
    buf: &Buffer,
    labels: &mut [u64; MAX_LABELS],
    offset: u32,
    len: u32,
) -> Option<Question> {
    let mut identity = name::label_start();
    let mut pos = offset;
    for count in 0..=MAX_LABELS {
        if pos >= len {
            return None;
        }
        let label_len = u32::from(byte(buf, pos));
        if label_len == 0 {
            return Some(Question {
                identity,
                count,
                end: pos + 1,
            });
        }
        if label_len > LABEL_MAX as u32 || count == MAX_LABELS {
            return None;
        }
        labels[count & (MAX_LABELS - 1)] = label_hash(buf, pos + 1, label_len);
        identity = name::combine(identity, identity_part(buf, pos + 1, label_len));
        pos += label_len + 1;
    }
    None
}

/// The identity of the (possibly compressed) name at `offset`, and the offset just past the
/// name in place (a pointer ends it there).
#[inline(always)]
pub(crate) fn identity(buf: &Buffer, offset: u32, len: u32) -> Option<(u64, u32)> {
    let mut identity = name::label_start();
    let mut pos = offset;
    // 1 until the first pointer: the name's end in place is found then (branch-free).
    let mut in_place: u32 = 1;
    let mut end: u32 = 0;
    for _ in 0..NAME_STEPS {
        if pos >= len {
            return None;
        }
        let label_len = u32::from(byte(buf, pos));
        if label_len & 0xc0 == 0xc0 {
            // A pointer must point backwards, which also rules out loops.
            let target = u32::from(u16_at(buf, pos) & 0x3fff);
            if target >= pos {
                return None;
            }
            end += (pos + 2) * in_place;
            in_place = 0;
            pos = target;
            continue;
        }
        if label_len == 0 {
            return Some((identity, end + (pos + 1) * in_place));
        }
        if label_len > LABEL_MAX as u32 {
            return None;
        }
        identity = name::combine(identity, identity_part(buf, pos + 1, label_len));
        pos += label_len + 1;
    }
    None
}
