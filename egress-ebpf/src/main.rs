//! cgroup `sock_addr` programs that send selected tasks' connections to an egress gateway.
//!
//! Every hook is a thin wrapper around a `try_` function; the verdict a hook returns is always
//! one of the named constants [`ALLOW`] and [`DENY`]. Errors inside a hook fail open ([`ALLOW`]
//! with the address untouched): a bug in the agent must not take the node's networking down.
//!
//! Kernel reference for the context fields and return codes:
//! <https://elixir.bootlin.com/linux/v6.18/source/include/uapi/linux/bpf.h> (`struct bpf_sock_addr`).
#![no_std]
#![no_main]
#![expect(
    clippy::inline_always,
    reason = "helpers are inlined into each hook: no BPF-to-BPF calls, simpler verification"
)]
#![expect(
    clippy::needless_pass_by_value,
    reason = "the program macros hand each hook its context by value"
)]

mod maps;
mod redirect;
mod reverse;
mod select;

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

/// Let the syscall proceed (with whatever address the hook wrote).
pub(crate) const ALLOW: i32 = 1;
/// Fail the syscall with `EPERM`.
pub(crate) const DENY: i32 = 0;

/// `connect()` on an IPv4 socket (TCP and connected UDP).
#[cgroup_sock_addr(connect4)]
fn connect4(ctx: SockAddrContext) -> i32 {
    redirect::try_redirect4(&ctx).unwrap_or(ALLOW)
}

/// `connect()` on an IPv6 socket, including IPv4-mapped destinations.
#[cgroup_sock_addr(connect6)]
fn connect6(ctx: SockAddrContext) -> i32 {
    redirect::try_redirect6(&ctx).unwrap_or(ALLOW)
}

/// `sendto()`/`sendmsg()` with an address on an unconnected IPv4 UDP socket.
#[cgroup_sock_addr(sendmsg4)]
fn sendmsg4(ctx: SockAddrContext) -> i32 {
    redirect::try_redirect4(&ctx).unwrap_or(ALLOW)
}

/// `sendto()`/`sendmsg()` with an address on an unconnected IPv6 UDP socket.
#[cgroup_sock_addr(sendmsg6)]
fn sendmsg6(ctx: SockAddrContext) -> i32 {
    redirect::try_redirect6(&ctx).unwrap_or(ALLOW)
}

/// `recvfrom()`/`recvmsg()` on an IPv4 UDP socket: restores the reply's source.
#[cgroup_sock_addr(recvmsg4)]
fn recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse::try_reverse4(&ctx).unwrap_or(ALLOW)
}

/// `recvfrom()`/`recvmsg()` on an IPv6 UDP socket.
#[cgroup_sock_addr(recvmsg6)]
fn recvmsg6(ctx: SockAddrContext) -> i32 {
    reverse::try_reverse6(&ctx).unwrap_or(ALLOW)
}

/// `getpeername()` on an IPv4 socket: reports the original destination.
#[cgroup_sock_addr(getpeername4)]
fn getpeername4(ctx: SockAddrContext) -> i32 {
    reverse::try_reverse4(&ctx).unwrap_or(ALLOW)
}

/// `getpeername()` on an IPv6 socket.
#[cgroup_sock_addr(getpeername6)]
fn getpeername6(ctx: SockAddrContext) -> i32 {
    reverse::try_reverse6(&ctx).unwrap_or(ALLOW)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable path to here, so this never runs.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
