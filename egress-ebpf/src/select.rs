//! Which tasks the hooks act for: the cgroup walk.

use aya_ebpf::helpers::bpf_get_current_ancestor_cgroup_id;
use egress_common::{CgroupMode, limits::MAX_CGROUP_DEPTH};

use crate::maps::CGROUPS;

/// The selection groups of the current task (zero: not selected).
///
/// Walks the task's cgroup ancestors from the root (level 0) down, at most
/// [`MAX_CGROUP_DEPTH`] levels; the deepest ancestor with an entry in `CGROUPS` decides. So an
/// exempt cgroup inside a selected one goes direct, and a selected cgroup's descendants are
/// selected. The walk stops early where the task's own cgroup is reached.
#[inline(always)]
pub(crate) fn current_task_groups() -> u32 {
    let mut groups = 0;
    for level in 0..MAX_CGROUP_DEPTH {
        // SAFETY: a helper with no memory arguments; returns 0 past the task's own level.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level.cast_signed()) };
        if id == 0 {
            break;
        }
        // SAFETY: values are plain data written whole by userspace; a torn read at worst
        // yields a stale mode, the same as reading just before the update.
        if let Some(entry) = unsafe { CGROUPS.get(id) } {
            groups = if entry.mode == CgroupMode::SELECTED {
                entry.groups
            } else {
                0
            };
        }
    }
    groups
}
