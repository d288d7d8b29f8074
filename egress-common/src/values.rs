//! Map values.

use core::mem::size_of;

use crate::limits::{HOST_LABEL_LEN, RULE_NAME_LEN};

/// Where a route sends matching connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct RouteValue {
    /// Gateway address, network byte order; IPv4 is IPv4-mapped (see
    /// [`crate::route_flags::GATEWAY_V4`]). All zero: the gateway is unknown.
    pub gateway: [u8; 16],
    /// Gateway port, network byte order.
    pub gateway_port_be: u16,
    /// [`crate::route_flags`].
    pub flags: u16,
    /// The rule this route came from: key of `RULE_NAMES`.
    pub rule_id: u32,
    /// This route's counter: key of `ROUTE_STATS`.
    pub route_id: u32,
    /// Selection groups the route applies to: a task is redirected when its cgroup entry's
    /// groups intersect these (see [`CgroupMode::groups`]).
    pub groups: u32,
}

impl RouteValue {
    /// Whether the gateway address is known (not all zero).
    #[must_use]
    pub fn has_gateway(&self) -> bool {
        self.gateway != [0; 16]
    }
}

/// The mode of a cgroup entry in the `CGROUPS` map.
///
/// A hook acts for a task when the nearest ancestor of its cgroup (itself included) that has an
/// entry is [`CgroupMode::SELECTED`]. An [`CgroupMode::EXEMPT`] entry nearer the task wins over a
/// farther selected one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct CgroupMode {
    /// [`CgroupMode::SELECTED`] or [`CgroupMode::EXEMPT`].
    pub mode: u32,
    /// For a selected cgroup, the selection groups it belongs to (one bit per distinct policy
    /// selector in Kubernetes mode; [`CgroupMode::ALL_GROUPS`] in standalone mode). Zero for an
    /// exempt one.
    pub groups: u32,
}

impl CgroupMode {
    /// Connections from this cgroup and its descendants are redirected.
    pub const SELECTED: u32 = 1;
    /// Connections from this cgroup and its descendants go direct.
    pub const EXEMPT: u32 = 2;
    /// Every selection group.
    pub const ALL_GROUPS: u32 = u32::MAX;
}

/// The original destination of a redirected socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct RevNatValue {
    /// Original destination address; IPv4 is IPv4-mapped.
    pub addr: [u8; 16],
    /// Original destination port, network byte order.
    pub port_be: u16,
    /// Always zero.
    pub reserved: u16,
}

/// A rule's name, NUL-padded UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct RuleName {
    /// The bytes of the name, followed by NULs.
    pub bytes: [u8; RULE_NAME_LEN],
}

impl Default for RuleName {
    fn default() -> Self {
        Self {
            bytes: [0; RULE_NAME_LEN],
        }
    }
}

/// The hostname that brought a route in (followed by ` +N` when N more did), NUL-padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct HostLabel {
    /// The bytes of the label, followed by NULs.
    pub bytes: [u8; HOST_LABEL_LEN],
}

impl Default for HostLabel {
    fn default() -> Self {
        Self {
            bytes: [0; HOST_LABEL_LEN],
        }
    }
}

const _: () = assert!(size_of::<HostLabel>() == HOST_LABEL_LEN);
const _: () = assert!(size_of::<RouteValue>() == 32);
const _: () = assert!(size_of::<CgroupMode>() == 8);
const _: () = assert!(size_of::<RevNatValue>() == 20);
const _: () = assert!(size_of::<RuleName>() == RULE_NAME_LEN);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data with no padding; every bit pattern is valid.
    unsafe impl aya::Pod for super::RouteValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CgroupMode {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RevNatValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuleName {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HostLabel {}
}
