//! recvmsg and getpeername: report the original destination of redirected sockets.
//!
//! Without this, UDP clients (resolvers above all) drop replies whose source is not the address
//! they sent to, and TCP clients that check their peer see the gateway. The translations live
//! in the socket's own storage, so they last exactly as long as the socket.

use aya_ebpf::programs::SockAddrContext;
use egress_common::{Reverse, socket_flags, stat, v4_unmapped};

use crate::{
    ALLOW,
    addr::{ip6_bytes, ip6_words, mapped},
    maps::{count, count_slot, socket_state},
};

#[inline(always)]
pub(crate) fn try_reverse4(ctx: &SockAddrContext) -> Result<i32, i32> {
    // SAFETY: the kernel passes a valid context for the life of the program.
    let sa = unsafe { &mut *ctx.sock_addr };
    let peer = mapped(sa.user_ip4);
    let port_be = u16::try_from(sa.user_port).map_err(|_| ALLOW)?;
    if let Some((original, original_port_be)) = original(ctx, &peer, port_be)
        && let Some(addr) = v4_unmapped(&original)
    {
        sa.user_ip4 = u32::from_ne_bytes(addr);
        sa.user_port = u32::from(original_port_be);
    }
    Ok(ALLOW)
}

#[inline(always)]
pub(crate) fn try_reverse6(ctx: &SockAddrContext) -> Result<i32, i32> {
    // SAFETY: as above.
    let sa = unsafe { &mut *ctx.sock_addr };
    let peer = ip6_bytes(&sa.user_ip6);
    let port_be = u16::try_from(sa.user_port).map_err(|_| ALLOW)?;
    if let Some((original, original_port_be)) = original(ctx, &peer, port_be) {
        sa.user_ip6 = ip6_words(&original);
        sa.user_port = u32::from(original_port_be);
    }
    Ok(ALLOW)
}

/// The original destination behind the gateway `peer`:`port_be`, if the socket was redirected
/// there.
#[inline(always)]
fn original(ctx: &SockAddrContext, peer: &[u8; 16], port_be: u16) -> Option<([u8; 16], u16)> {
    // SAFETY: the context's socket, which sock_addr programs may pass to the helper.
    let sk = unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk }.cast();
    // SAFETY: as above.
    let state = unsafe { socket_state(sk, false) }?;
    if state.flags & socket_flags::REDIRECTED == 0 {
        return None;
    }
    let slot = state.reverse.get(Reverse::slot(peer, port_be))?;
    if slot.gateway_port_be != port_be || slot.gateway != *peer {
        return None;
    }
    count(stat::REVERSED);
    count_slot(slot.counter, |c| &mut c.reversed);
    Some((slot.original, slot.original_port_be))
}
