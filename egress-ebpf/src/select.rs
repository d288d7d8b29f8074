//! Who the hooks act for: the decision of the current task, cached per leaf cgroup, and of a
//! socket, recorded when a selected task creates it.
//!
//! A task's decision comes from the nearest ancestor of its cgroup (itself included) that has
//! an entry in `CGROUPS`: a selected entry gives its class and scope, an exempt one (or none)
//! means "not selected". The walk is bounded at [`MAX_CGROUP_DEPTH`] levels and cached in
//! `DECISIONS` under the leaf cgroup id; a cached decision from an older `Config::generation`
//! is computed again.
//!
//! Sockets remember the decision of the task that created them (`cgroup/sock_create`). On 5.10
//! and 5.11 an `io_uring` connect runs in a kernel worker outside the task's cgroup; the
//! socket's own decision still applies.

use aya_ebpf::helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id};
use egress_common::{Decision, SocketState, cgroup_kind, limits::MAX_CGROUP_DEPTH, socket_flags};

use crate::maps::{CGROUPS, DECISIONS, config, count};

/// The current task's decision.
#[inline(always)]
pub(crate) fn current_task() -> Decision {
    let generation = config().map_or(0, |config| config.generation);
    // SAFETY: a helper with no arguments.
    let leaf = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: plain data written whole by this program or the kernel's LRU.
    if let Some(cached) = unsafe { DECISIONS.get(leaf) }
        && cached.generation == generation
    {
        return *cached;
    }
    count(egress_common::stat::WALKS);
    let decision = walk(generation);
    // A failed insert only costs another walk next time.
    let _ = DECISIONS.insert(leaf, decision, 0);
    decision
}

/// The walk from the root down; the deepest ancestor with an entry decides.
#[inline(always)]
fn walk(generation: u64) -> Decision {
    let mut decision = Decision {
        generation,
        ..Decision::default()
    };
    for level in 0..MAX_CGROUP_DEPTH {
        // SAFETY: a helper with no memory arguments; returns 0 past the task's own level.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level.cast_signed()) };
        if id == 0 {
            break;
        }
        // SAFETY: plain data written whole by userspace; a torn read at worst yields a stale
        // entry, as reading just before the update would.
        if let Some(entry) = unsafe { CGROUPS.get(id) } {
            if entry.kind == cgroup_kind::SELECTED {
                decision.scope = id;
                decision.class = entry.class;
                decision.exempt = 0;
            } else {
                decision.scope = 0;
                decision.class = 0;
                decision.exempt = 1;
            }
        }
    }
    decision
}

/// The decision for a socket with state `state` used by the current task: the socket's own
/// when it has one (recorded by its creator), else the task's.
///
/// A recorded decision from an older generation is computed again when the current task is the
/// socket's creator. Another task (an `io_uring` worker on 5.10/5.11) keeps the recorded one,
/// or the creator's cached one when that is current.
#[inline(always)]
pub(crate) fn for_socket(state: Option<&SocketState>) -> Decision {
    let Some(state) = state.filter(|s| s.flags & socket_flags::DECIDED != 0) else {
        return current_task();
    };
    let generation = config().map_or(0, |config| config.generation);
    if state.generation == generation {
        return recorded(state);
    }
    // SAFETY: a helper with no arguments.
    if unsafe { bpf_get_current_cgroup_id() } == state.creator {
        return current_task();
    }
    // SAFETY: as in `current_task`.
    match unsafe { DECISIONS.get(state.creator) } {
        Some(cached) if cached.generation == generation => *cached,
        _ => recorded(state),
    }
}

#[inline(always)]
fn recorded(state: &SocketState) -> Decision {
    Decision {
        generation: state.generation,
        scope: state.scope,
        class: state.class,
        exempt: 0,
    }
}

/// Records `decision` on a socket created by the current task.
#[inline(always)]
pub(crate) fn record(state: &mut SocketState, decision: &Decision) {
    state.generation = decision.generation;
    // SAFETY: a helper with no arguments.
    state.creator = unsafe { bpf_get_current_cgroup_id() };
    state.scope = decision.scope;
    state.class = decision.class;
    state.flags |= socket_flags::DECIDED;
}
