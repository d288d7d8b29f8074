//! Map keys.

use core::mem::size_of;

/// The data of an IPv4 route key in the `ROUTES_V4` LPM trie.
///
/// The trie matches prefixes from the first byte, so protocol and port come first and are
/// always matched in full; the address follows and is matched for the route's prefix length.
/// The full prefix length of a key is therefore `32 + address prefix` (64 for an exact address).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(C)]
pub struct RouteKey4 {
    /// `IPPROTO_TCP` or `IPPROTO_UDP` (see [`crate::proto`]).
    pub proto: u8,
    /// Always zero.
    pub reserved: u8,
    /// Destination port, network byte order.
    pub port_be: u16,
    /// Destination address, network byte order.
    pub addr: [u8; 4],
}

impl RouteKey4 {
    /// Bits of the key before the address: protocol, reserved and port.
    pub const HEADER_BITS: u32 = 32;
}

/// The data of an IPv6 route key in the `ROUTES_V6` LPM trie; laid out like [`RouteKey4`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(C)]
pub struct RouteKey6 {
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    /// Always zero.
    pub reserved: u8,
    /// Destination port, network byte order.
    pub port_be: u16,
    /// Destination address, network byte order.
    pub addr: [u8; 16],
}

impl RouteKey6 {
    /// Bits of the key before the address.
    pub const HEADER_BITS: u32 = 32;
}

/// Key of the reverse-NAT map: a redirected socket and the gateway it was sent to.
///
/// Written by connect/sendmsg when they redirect; read by recvmsg (to restore the source of a
/// reply) and getpeername (to report the original peer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct RevNatKey {
    /// `bpf_get_socket_cookie()`: unique per socket for the life of the kernel.
    pub cookie: u64,
    /// Gateway address; IPv4 is IPv4-mapped, so v4 and v6 sockets share the map.
    pub gateway: [u8; 16],
    /// Gateway port, network byte order.
    pub gateway_port_be: u16,
    /// Always zero.
    pub reserved: [u8; 6],
}

const _: () = assert!(size_of::<RouteKey4>() == 8);
const _: () = assert!(size_of::<RouteKey6>() == 20);
const _: () = assert!(size_of::<RevNatKey>() == 32);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data with no padding; every bit pattern is valid.
    unsafe impl aya::Pod for super::RouteKey4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RouteKey6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RevNatKey {}
}
