//! connect and sendmsg: rewrite the destination of selected tasks to the route's gateway.

use aya_ebpf::{
    EbpfContext as _, helpers::bpf_get_socket_cookie, maps::lpm_trie::Key,
    programs::SockAddrContext,
};
use egress_common::{
    RevNatKey, RevNatValue, RouteKey4, RouteKey6, RouteValue, route_flags, stat, v4_mapped,
    v4_unmapped,
};

use crate::{
    ALLOW, DENY,
    maps::{REVNAT, ROUTES_V4, ROUTES_V6, count, count_route},
    select::current_task_groups,
};

/// What to do with a destination that matched a route.
enum Action {
    /// Rewrite to this gateway (16-byte form) and port.
    Rewrite([u8; 16], u16),
    /// Leave the address alone.
    Pass,
    /// Refuse the syscall.
    Deny,
}

/// IPv4 socket: look the destination up in the IPv4 routes. `Err` carries the verdict for a
/// context the hook cannot interpret (it fails open).
#[inline(always)]
pub(crate) fn try_redirect4(ctx: &SockAddrContext) -> Result<i32, i32> {
    // SAFETY: the kernel passes a valid context for the life of the program.
    let sa = unsafe { &mut *ctx.sock_addr };
    let dest = sa.user_ip4.to_ne_bytes();
    let port_be = u16::try_from(sa.user_port).map_err(|_| ALLOW)?;
    let proto = u8::try_from(sa.protocol).map_err(|_| ALLOW)?;
    let Some(route) = lookup4(proto, port_be, dest) else {
        return Ok(ALLOW);
    };
    match decide(&route, true) {
        Action::Pass => Ok(ALLOW),
        Action::Deny => Ok(DENY),
        Action::Rewrite(gateway, gateway_port_be) => {
            let Some(gateway4) = v4_unmapped(&gateway) else {
                return Ok(ALLOW);
            };
            sa.user_ip4 = u32::from_ne_bytes(gateway4);
            sa.user_port = u32::from(gateway_port_be);
            remember(
                ctx,
                proto,
                v4_mapped(dest),
                port_be,
                gateway,
                gateway_port_be,
            );
            count_route(route.route_id);
            Ok(ALLOW)
        }
    }
}

/// IPv6 socket: IPv4-mapped destinations use the IPv4 routes, so a dual-stack socket cannot
/// bypass an IPv4 rule; native destinations use the IPv6 routes.
#[inline(always)]
pub(crate) fn try_redirect6(ctx: &SockAddrContext) -> Result<i32, i32> {
    // SAFETY: as in `try_redirect4`.
    let sa = unsafe { &mut *ctx.sock_addr };
    let dest = ip6_bytes(&sa.user_ip6);
    let port_be = u16::try_from(sa.user_port).map_err(|_| ALLOW)?;
    let proto = u8::try_from(sa.protocol).map_err(|_| ALLOW)?;
    let route = match v4_unmapped(&dest) {
        Some(dest4) => lookup4(proto, port_be, dest4),
        None => lookup6(proto, port_be, dest),
    };
    let Some(route) = route else {
        return Ok(ALLOW);
    };
    match decide(&route, false) {
        Action::Pass => Ok(ALLOW),
        Action::Deny => Ok(DENY),
        Action::Rewrite(gateway, gateway_port_be) => {
            sa.user_ip6 = ip6_words(&gateway);
            sa.user_port = u32::from(gateway_port_be);
            remember(ctx, proto, dest, port_be, gateway, gateway_port_be);
            count_route(route.route_id);
            Ok(ALLOW)
        }
    }
}

#[inline(always)]
fn lookup4(proto: u8, port_be: u16, addr: [u8; 4]) -> Option<RouteValue> {
    let key = Key::new(
        RouteKey4::HEADER_BITS + 32,
        RouteKey4 {
            proto,
            reserved: 0,
            port_be,
            addr,
        },
    );
    ROUTES_V4.get(&key).copied()
}

#[inline(always)]
fn lookup6(proto: u8, port_be: u16, addr: [u8; 16]) -> Option<RouteValue> {
    let key = Key::new(
        RouteKey6::HEADER_BITS + 128,
        RouteKey6 {
            proto,
            reserved: 0,
            port_be,
            addr,
        },
    );
    ROUTES_V6.get(&key).copied()
}

/// Decides what a route hit means for the current task: it acts only when the task's selection
/// groups intersect the route's. `v4_socket`: only an IPv4 gateway can
/// be reached.
#[inline(always)]
fn decide(route: &RouteValue, v4_socket: bool) -> Action {
    if current_task_groups() & route.groups == 0 {
        count(stat::UNSELECTED);
        return Action::Pass;
    }
    let fail_closed = route.flags & route_flags::FAIL_CLOSED != 0;
    let reachable =
        route.has_gateway() && (!v4_socket || route.flags & route_flags::GATEWAY_V4 != 0);
    if reachable {
        count(stat::REDIRECTED);
        return Action::Rewrite(route.gateway, route.gateway_port_be);
    }
    if route.has_gateway() {
        count(stat::FAMILY_MISMATCH);
    }
    if fail_closed {
        count(stat::DENIED);
        Action::Deny
    } else {
        Action::Pass
    }
}

/// Records the original destination of a redirected socket for recvmsg and getpeername.
#[inline(always)]
fn remember(
    ctx: &SockAddrContext,
    proto: u8,
    dest: [u8; 16],
    port_be: u16,
    gateway: [u8; 16],
    gateway_port_be: u16,
) {
    // SAFETY: the context is a valid sock_addr context, which this helper accepts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = RevNatKey {
        cookie,
        gateway,
        gateway_port_be,
        reserved: [0; 6],
    };
    let value = RevNatValue {
        addr: dest,
        port_be,
        reserved: 0,
    };
    // Unconnected UDP calls this per datagram: skip the write when nothing changed. A TCP
    // socket connects once, so it never has an entry yet.
    // SAFETY: plain data; see `select.rs`.
    if proto == egress_common::proto::UDP
        && let Some(known) = unsafe { REVNAT.get(key) }
        && *known == value
    {
        return;
    }
    if REVNAT.insert(key, value, 0).is_err() {
        count(stat::REVNAT_FAILED);
    }
}

/// `user_ip6` words (network order in memory) as bytes.
#[inline(always)]
pub(crate) fn ip6_bytes(words: &[u32; 4]) -> [u8; 16] {
    let [a, b, c, d] = [
        words[0].to_ne_bytes(),
        words[1].to_ne_bytes(),
        words[2].to_ne_bytes(),
        words[3].to_ne_bytes(),
    ];
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

/// Bytes as `user_ip6` words.
#[inline(always)]
pub(crate) fn ip6_words(bytes: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        u32::from_ne_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
    ]
}
