//! Map keys.

use core::mem::size_of;

/// Key of `LEARNED`: an address as seen from a scope, the cgroup id of a selected entry: the
/// addresses the kernel learned from DNS answers that entry's workloads received, which only
/// that entry's tasks see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(C)]
pub struct AddrKey {
    /// The cgroup id of the selected entry that learned the address.
    pub scope: u64,
    /// The address; IPv4 is IPv4-mapped.
    pub addr: [u8; 16],
}

/// Key of `TARGETS`: where a class sends a destination set on a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(C)]
pub struct TargetKey {
    /// The routing class of the task (see `CgroupEntry::class`).
    pub class: u32,
    /// The destination set the address belongs to.
    pub set: u32,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    /// Always zero.
    pub reserved: u8,
    /// Destination port, network byte order.
    pub port_be: u16,
}

/// Key of `TRUSTED`: a resolver whose answers may be learned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(C)]
pub struct ResolverKey {
    /// The resolver's address; IPv4 is IPv4-mapped.
    pub addr: [u8; 16],
    /// Its port, network byte order.
    pub port_be: u16,
    /// Always zero.
    pub reserved: [u8; 6],
}

/// Key of `LABELS`: names the CLI shows for ids (written by the agent only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(C)]
pub struct LabelKey {
    /// One of [`crate::label_kind`].
    pub kind: u32,
    /// The id.
    pub id: u32,
}

/// Key of `RESOLVED`: one address the agent's resolver got for one hostname (written by the
/// agent only, so that a restart starts from what it knew).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(C)]
pub struct ResolvedKey {
    /// The hostname's pattern id.
    pub pattern: u32,
    /// Always zero.
    pub reserved: u32,
    /// The address; IPv4 is IPv4-mapped.
    pub addr: [u8; 16],
}

const _: () = assert!(size_of::<AddrKey>() == 24);
const _: () = assert!(size_of::<TargetKey>() == 12);
const _: () = assert!(size_of::<ResolverKey>() == 24);
const _: () = assert!(size_of::<LabelKey>() == 8);
const _: () = assert!(size_of::<ResolvedKey>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data with no padding; every bit pattern is valid.
    unsafe impl aya::Pod for super::AddrKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TargetKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ResolverKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LabelKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ResolvedKey {}
}
