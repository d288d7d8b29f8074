//! recvmsg and getpeername: report the original destination of redirected sockets.
//!
//! Without this, UDP clients (resolvers above all) drop replies whose source is not the address
//! they sent to, and TCP clients that check their peer see the gateway.

use aya_ebpf::{EbpfContext as _, helpers::bpf_get_socket_cookie, programs::SockAddrContext};
use egress_common::{RevNatKey, RevNatValue, stat, v4_mapped, v4_unmapped};

use crate::{
    ALLOW,
    maps::{REVNAT, count},
    redirect::{ip6_bytes, ip6_words},
};

#[inline(always)]
pub(crate) fn try_reverse4(ctx: &SockAddrContext) -> Result<i32, i32> {
    // SAFETY: the kernel passes a valid context for the life of the program.
    let sa = unsafe { &mut *ctx.sock_addr };
    let peer = v4_mapped(sa.user_ip4.to_ne_bytes());
    let port_be = u16::try_from(sa.user_port).map_err(|_| ALLOW)?;
    if let Some(original) = original(ctx, peer, port_be)
        && let Some(addr) = v4_unmapped(&original.addr)
    {
        sa.user_ip4 = u32::from_ne_bytes(addr);
        sa.user_port = u32::from(original.port_be);
        count(stat::REVERSED);
    }
    Ok(ALLOW)
}

#[inline(always)]
pub(crate) fn try_reverse6(ctx: &SockAddrContext) -> Result<i32, i32> {
    // SAFETY: as above.
    let sa = unsafe { &mut *ctx.sock_addr };
    let peer = ip6_bytes(&sa.user_ip6);
    let port_be = u16::try_from(sa.user_port).map_err(|_| ALLOW)?;
    if let Some(original) = original(ctx, peer, port_be) {
        sa.user_ip6 = ip6_words(&original.addr);
        sa.user_port = u32::from(original.port_be);
        count(stat::REVERSED);
    }
    Ok(ALLOW)
}

#[inline(always)]
fn original(ctx: &SockAddrContext, peer: [u8; 16], port_be: u16) -> Option<RevNatValue> {
    // SAFETY: the context is a valid sock_addr context, which this helper accepts.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = RevNatKey {
        cookie,
        gateway: peer,
        gateway_port_be: port_be,
        reserved: [0; 6],
    };
    // SAFETY: plain data, copied out at once.
    unsafe { REVNAT.get(key) }.copied()
}
