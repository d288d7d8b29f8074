//! `cgroup/sock_create`: a socket created by a selected task records that task's decision in
//! its storage, so the socket keeps it wherever it is used from (an `io_uring` worker outside
//! the task's cgroup on 5.10/5.11, a task it was handed to). Sockets of unselected tasks get
//! no storage.

use aya_ebpf::programs::{SockContext, SockoptContext};
use egress_common::{socket_flags, stat};

use crate::{
    ALLOW,
    maps::{count, socket_state},
    select,
};

#[inline(always)]
pub(crate) fn try_sock_create(ctx: &SockContext) -> Result<i32, i32> {
    let decision = select::current_task();
    if decision.class == 0 {
        return Ok(ALLOW);
    }
    // SAFETY: the context is the socket being created, which the helper accepts here.
    let state = unsafe { socket_state(ctx.sock.cast(), true) }.ok_or_else(|| {
        // The socket still works: its connects fall back to the task's decision.
        count(stat::STORAGE_FAILED);
        ALLOW
    })?;
    select::record(state, &decision);
    Ok(ALLOW)
}

/// `IPPROTO_IPV6` and its `IPV6_V6ONLY` option.
const IPPROTO_IPV6: i32 = 41;
const IPV6_V6ONLY: i32 = 26;

/// `cgroup/setsockopt`: `IPV6_V6ONLY` on a selected socket is noted in its storage, so a
/// redirect never gives it an IPv4-mapped gateway it cannot reach (it is refused instead).
/// The call itself always proceeds unchanged.
#[inline(always)]
pub(crate) fn try_setsockopt(ctx: &SockoptContext) -> i32 {
    // SAFETY: the kernel passes a valid context for the life of the program.
    let opt = unsafe { &*ctx.sockopt };
    if opt.level != IPPROTO_IPV6 || opt.optname != IPV6_V6ONLY {
        return ALLOW;
    }
    // SAFETY: union fields the kernel sets for setsockopt programs.
    let (sk, value, end) = unsafe {
        (
            opt.__bindgen_anon_1.sk,
            opt.__bindgen_anon_2.optval.cast::<u8>(),
            opt.__bindgen_anon_3.optval_end.cast::<u8>(),
        )
    };
    // The verifier needs the bound checked against optval_end before the read.
    if value.is_null() || value.wrapping_add(4) > end {
        return ALLOW;
    }
    // SAFETY: four bytes inside [optval, optval_end), checked above.
    let on = unsafe { core::ptr::read_unaligned(value.cast::<i32>()) } != 0;
    // SAFETY: the socket of a sockopt context, which the helper accepts.
    let Some(state) = (unsafe { socket_state(sk.cast(), false) }) else {
        return ALLOW;
    };
    if on {
        state.flags |= socket_flags::V6ONLY;
    } else {
        state.flags &= !socket_flags::V6ONLY;
    }
    ALLOW
}
