//! `cgroup/sock_create`: a socket created by a selected task records that task's decision in
//! its storage, so the socket keeps it wherever it is used from (an `io_uring` worker outside
//! the task's cgroup on 5.10/5.11, a task it was handed to). Sockets of unselected tasks get
//! no storage.

use aya_ebpf::programs::SockContext;
use egress_common::stat;

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
