//! The ABI's fingerprint: every map definition, every key and value type's size and each
//! field's name, offset and size, and every constant both sides read. [`HISTORY`] records the
//! fingerprint of each [`crate::ABI_VERSION`]: a unit test holds its last entry to
//! [`fingerprint`], so swapping two fields, resizing one or renumbering a flag without a new
//! version (and a migration of what the kernel wrote) fails the build's tests.

use core::mem::size_of;

use crate::{
    AddrKey, AddrValue, CgroupEntry, CidrValue, Config, Counters, Decision, Label, LabelKey,
    MARKER_SCOPE, PatternValue, REVERSE_SLOTS, ResolvedKey, ResolverKey, Reverse, SET_COUNTER,
    SocketState, Target, TargetKey, cgroup_kind, config_flags, label_kind, limits, maps, name,
    proto, socket_flags, source, stat, target_flags,
};

/// `(ABI version, fingerprint)`, oldest first. Version 1's layout predates the fingerprint.
pub const HISTORY: &[(u32, u64)] = &[(2, 0x8f8c_6389_e0c3_25e5), (3, 0x1552_8eaa_66ce_bfbc)];

/// What [`walk`] shows.
pub trait Visitor {
    /// A type and its size; its fields follow.
    fn ty(&mut self, name: &str, size: usize);
    /// A field of the last type: its name, offset and size.
    fn field(&mut self, name: &str, offset: usize, size: usize);
    /// A constant.
    fn constant(&mut self, name: &str, value: u64);
}

/// The size of a field, from a projection to it (never called).
pub(crate) fn field_size<T, F>(_projection: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// Shows `Type { field, ... }` to a visitor.
macro_rules! layout {
    ($visitor:ident, $ty:ident { $($field:ident),* $(,)? }) => {
        $visitor.ty(stringify!($ty), core::mem::size_of::<$ty>());
        $(
            $visitor.field(
                stringify!($field),
                core::mem::offset_of!($ty, $field),
                $crate::abi::field_size(|value: &$ty| &value.$field),
            );
        )*
    };
}
#[cfg(test)]
pub(crate) use layout;

/// Shows constants to a visitor, by their paths.
macro_rules! constants {
    ($visitor:ident, $($constant:path),* $(,)?) => {
        $(
            #[allow(
                clippy::cast_lossless,
                clippy::cast_possible_truncation,
                reason = "constants of every width, widened to u64 (none is negative)"
            )]
            $visitor.constant(stringify!($constant), $constant as u64);
        )*
    };
}

/// Shows every type and constant of the ABI to `visitor`.
pub fn walk(visitor: &mut impl Visitor) {
    let v = visitor;
    layout!(v, AddrKey { scope, addr });
    layout!(
        v,
        TargetKey {
            class,
            set,
            proto,
            reserved,
            port_be
        }
    );
    layout!(
        v,
        ResolverKey {
            addr,
            port_be,
            reserved
        }
    );
    layout!(v, LabelKey { kind, id });
    layout!(
        v,
        ResolvedKey {
            pattern,
            reserved,
            addr
        }
    );
    walk_values(v);
    walk_constants(v);
}

/// Shows the value types to `v`.
fn walk_values(v: &mut impl Visitor) {
    layout!(
        v,
        Config {
            generation,
            name_seed,
            grace_ns,
            min_ttl_ns,
            max_ttl_ns,
            dns_ports_be,
            flags,
            reserved
        }
    );
    layout!(v, CgroupEntry { kind, class });
    layout!(
        v,
        Decision {
            generation,
            scope,
            class,
            exempt
        }
    );
    layout!(
        v,
        AddrValue {
            set,
            source,
            expires_ns
        }
    );
    layout!(v, CidrValue { set, reserved });
    layout!(
        v,
        Target {
            gateway6,
            gateway4,
            gateway_port_be,
            flags,
            rule,
            counter
        }
    );
    layout!(v, PatternValue { pattern, reserved });
    layout!(
        v,
        Reverse {
            original,
            gateway,
            original_port_be,
            gateway_port_be,
            counter
        }
    );
    layout!(
        v,
        SocketState {
            generation,
            creator,
            scope,
            class,
            flags,
            reverse,
            dns_ids,
            dns_next,
            reserved
        }
    );
    layout!(
        v,
        Counters {
            redirected,
            refused,
            family_mismatch,
            reversed,
            unselected
        }
    );
    layout!(v, Label { bytes });
}

/// Shows every shared constant to `v`.
fn walk_constants(v: &mut impl Visitor) {
    constants!(
        v,
        limits::MAX_CGROUP_DEPTH,
        limits::LABEL_LEN,
        limits::DNS_MESSAGE,
        limits::DNS_LABELS,
        limits::DNS_PENDING,
        limits::DNS_PORTS,
        REVERSE_SLOTS,
        cgroup_kind::SELECTED,
        cgroup_kind::EXEMPT,
        source::STATIC,
        source::RESOLVED,
        source::LEARNED,
        source::MARKER,
        MARKER_SCOPE,
        target_flags::REFUSE,
        target_flags::QUIC,
        socket_flags::REDIRECTED,
        socket_flags::DNS,
        socket_flags::DECIDED,
        socket_flags::V6ONLY,
        config_flags::LEARN,
        config_flags::HAS_CIDRS,
        config_flags::MARKERS_INCOMPLETE,
        label_kind::RULE,
        label_kind::PATTERN,
        label_kind::SET,
        crate::FIRST_COMPOSITE_SET,
        SET_COUNTER,
        stat::REDIRECTED,
        stat::REFUSED,
        stat::UNSELECTED,
        stat::FAMILY_MISMATCH,
        stat::REVERSED,
        stat::STORAGE_FAILED,
        stat::LEARNED,
        stat::UNPARSED,
        stat::UNTRUSTED,
        stat::LEARN_FAILED,
        stat::WALKS,
        stat::QUIC_REFUSED,
        stat::ANSWERS,
        stat::COUNT,
        proto::TCP,
        proto::UDP,
        name::LABEL_MAX,
        name::STAR,
    );
}

/// Hashes what it is shown (names byte by byte, numbers whole).
pub struct Hasher(pub u64);

impl Hasher {
    fn text(&mut self, text: &str) {
        for byte in text.bytes() {
            self.0 = name::label_step(self.0, byte);
        }
    }

    fn number(&mut self, number: u64) {
        self.0 = name::combine(self.0, number);
    }
}

impl Visitor for Hasher {
    fn ty(&mut self, name: &str, size: usize) {
        self.text(name);
        self.number(size as u64);
    }

    fn field(&mut self, name: &str, offset: usize, size: usize) {
        self.text(name);
        self.number(offset as u64);
        self.number(size as u64);
    }

    fn constant(&mut self, name: &str, value: u64) {
        self.text(name);
        self.number(value);
    }
}

/// The fingerprint of this build's ABI: the map definitions ([`maps::digest`]), then
/// everything [`walk`] shows.
#[must_use]
pub fn fingerprint() -> u64 {
    let mut hasher = Hasher(maps::digest(&maps::ALL));
    walk(&mut hasher);
    hasher.0
}
