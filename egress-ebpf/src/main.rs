//! The egress-agent eBPF programs: cgroup `sock_addr` hooks that send selected tasks'
//! connections to an egress gateway, a `sock_create` hook that gives their sockets a decision,
//! and `cgroup_skb` hooks that learn hostnames' addresses from the DNS answers they receive.
//!
//! Every hook is a thin wrapper around a `try_` function; the verdict a hook returns is always
//! one of the named constants ([`ALLOW`], [`DENY`], [`learn::PASS`]). Errors inside a hook fail
//! open: a bug in the agent must not take the node's networking down. Refusals are deliberate
//! verdicts (fail-closed rules, QUIC, no gateway of the socket's family), never errors.
//!
//! Kernel reference for the context fields and return codes:
//! <https://elixir.bootlin.com/linux/v6.18/source/include/uapi/linux/bpf.h> (`struct bpf_sock_addr`,
//! `struct __sk_buff`).
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

mod addr;
mod dns;
mod learn;
mod maps;
mod packet;
mod redirect;
mod reverse;
mod select;
mod socket;

use aya_ebpf::{
    macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, cgroup_sockopt},
    programs::{SkBuffContext, SockAddrContext, SockContext, SockoptContext},
};

/// Let the syscall proceed (with whatever address the hook wrote).
pub(crate) const ALLOW: i32 = 1;
/// Fail the syscall with `EPERM`.
pub(crate) const DENY: i32 = 0;

/// `socket()` for IPv4 and IPv6: records a selected creator's decision.
#[cgroup_sock(sock_create)]
fn sock_create(ctx: SockContext) -> i32 {
    socket::try_sock_create(&ctx).unwrap_or(ALLOW)
}

/// `setsockopt()`: notes `IPV6_V6ONLY` on selected sockets; never changes the call.
#[cgroup_sockopt(setsockopt)]
fn setsockopt(ctx: SockoptContext) -> i32 {
    socket::try_setsockopt(&ctx)
}

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

/// Packets leaving sockets: remembers selected sockets' DNS query ids.
#[cgroup_skb(egress)]
fn dns_egress(ctx: SkBuffContext) -> i32 {
    learn::try_dns_egress(&ctx).unwrap_or(learn::PASS)
}

/// Packets reaching sockets: learns addresses from answers to those queries.
#[cgroup_skb(ingress)]
fn dns_ingress(ctx: SkBuffContext) -> i32 {
    learn::try_dns_ingress(&ctx).unwrap_or(learn::PASS)
}

/// Never attached: tail-called from `dns_ingress` (and itself) to read an answer's records.
#[cgroup_skb(ingress)]
fn dns_answers(ctx: SkBuffContext) -> i32 {
    learn::try_dns_answers(&ctx).unwrap_or(learn::PASS)
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
