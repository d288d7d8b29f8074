//! connect and sendmsg: send selected tasks' connections to their class's gateway.
//!
//! ```text
//! ADDRESSES[dest], marker LEARNED[(0, dest)], CIDRS[dest] ── none ─► pass (who connects is
//!        │ routed somewhere                                         never asked)
//!        ▼
//! decision (socket's, else the task's) ── not selected ─► count the set it would hit, pass
//!        │ class, scope
//!        ▼
//! LEARNED[(scope, dest)] (marked) ─► TARGETS[(class, set, proto, port)] ─┐ first hit
//! ADDRESSES[dest]                 ─► TARGETS[...]                        ├──────────► refuse, or
//! CIDRS[dest]                     ─► TARGETS[...]                        ┘            rewrite to the
//!                                                                                     gateway of the
//!                                                                                     socket's family
//! ```
//!
//! Most connections on a node go to destinations no rule routes; they cost two hash lookups.
//! A rewrite is recorded in the socket's storage before the address changes, so a redirect is
//! never half translated; when the storage cannot be had the connection is refused.

use aya_ebpf::{maps::lpm_trie::Key, programs::SockAddrContext};
use egress_common::{
    AddrKey, Decision, MARKER_SCOPE, Reverse, SET_COUNTER, Target, TargetKey, config_flags,
    is_v4_mapped, socket_flags, stat, target_flags, v4_unmapped,
};

use crate::{
    ALLOW, DENY,
    addr::{ip6_bytes, ip6_words, mapped},
    maps::{ADDRESSES, CIDRS, LEARNED, TARGETS, config, count, count_slot, socket_state},
    select::{self, for_socket},
};

/// What to do with a connection.
enum Verdict {
    /// Leave the address alone.
    Pass,
    /// Refuse the syscall.
    Refuse,
    /// Rewrite to this gateway (16-byte form) and port.
    Rewrite([u8; 16], u16, u32),
}

/// IPv4 socket. `Err` carries the verdict for a context the hook cannot interpret (it fails
/// open).
#[inline(always)]
pub(crate) fn try_redirect4(ctx: &SockAddrContext) -> Result<i32, i32> {
    // SAFETY: the kernel passes a valid context for the life of the program.
    let sa = unsafe { &mut *ctx.sock_addr };
    let dest = mapped(sa.user_ip4);
    let port_be = u16::try_from(sa.user_port).map_err(|_| ALLOW)?;
    let proto = u8::try_from(sa.protocol).map_err(|_| ALLOW)?;
    match decide(ctx, true, dest, port_be, proto) {
        Verdict::Pass => Ok(ALLOW),
        Verdict::Refuse => Ok(DENY),
        Verdict::Rewrite(gateway, gateway_port_be, _) => {
            // `verdict` gives an IPv4 socket only IPv4 gateways; refuse rather than pass if not.
            let Some(gateway4) = v4_unmapped(&gateway) else {
                return Ok(DENY);
            };
            sa.user_ip4 = u32::from_ne_bytes(gateway4);
            sa.user_port = u32::from(gateway_port_be);
            Ok(ALLOW)
        }
    }
}

/// IPv6 socket, including IPv4-mapped destinations (which use the same addresses, mapped).
#[inline(always)]
pub(crate) fn try_redirect6(ctx: &SockAddrContext) -> Result<i32, i32> {
    // SAFETY: as in `try_redirect4`.
    let sa = unsafe { &mut *ctx.sock_addr };
    let dest = ip6_bytes(&sa.user_ip6);
    let port_be = u16::try_from(sa.user_port).map_err(|_| ALLOW)?;
    let proto = u8::try_from(sa.protocol).map_err(|_| ALLOW)?;
    match decide(ctx, false, dest, port_be, proto) {
        Verdict::Pass => Ok(ALLOW),
        Verdict::Refuse => Ok(DENY),
        Verdict::Rewrite(gateway, gateway_port_be, _) => {
            sa.user_ip6 = ip6_words(&gateway);
            sa.user_port = u32::from(gateway_port_be);
            Ok(ALLOW)
        }
    }
}

#[inline(always)]
fn decide(
    ctx: &SockAddrContext,
    v4_socket: bool,
    dest: [u8; 16],
    port_be: u16,
    proto: u8,
) -> Verdict {
    let Some(known) = Known::of(&dest) else {
        return Verdict::Pass;
    };
    // SAFETY: the context's socket, which sock_addr programs may pass to the helper.
    let sk = unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk }.cast();
    // SAFETY: as above.
    let state = unsafe { socket_state(sk, false) };
    let decision = for_socket(state.as_deref());
    if decision.class == 0 {
        if decision.exempt == 0 && known.global {
            // A leak, or a pod not selected yet.
            count(stat::UNSELECTED);
            count_slot(SET_COUNTER | known.global_set, |c| &mut c.unselected);
        }
        return Verdict::Pass;
    }
    let Some(target) = known.target(&decision, &dest, proto, port_be) else {
        return Verdict::Pass;
    };
    let v6only = state
        .as_deref()
        .is_some_and(|s| s.flags & socket_flags::V6ONLY != 0);
    let verdict = verdict(&target, v4_socket, v6only, &dest);
    let Verdict::Rewrite(gateway, gateway_port_be, counter) = verdict else {
        return verdict;
    };
    // Record the reverse translation first: without it the rewrite must not happen.
    // SAFETY: as above.
    let Some(state) = (match state {
        Some(state) => Some(state),
        None => unsafe { socket_state(sk, true) },
    }) else {
        count(stat::STORAGE_FAILED);
        count(stat::REFUSED);
        return Verdict::Refuse;
    };
    if state.flags & socket_flags::DECIDED == 0 {
        select::record(state, &decision);
    }
    let slot = &mut state.reverse[Reverse::slot(&gateway, gateway_port_be)];
    slot.original = dest;
    slot.original_port_be = port_be;
    slot.gateway = gateway;
    slot.gateway_port_be = gateway_port_be;
    slot.counter = counter;
    state.flags |= socket_flags::REDIRECTED;
    count(stat::REDIRECTED);
    count_slot(counter, |c| &mut c.redirected);
    verdict
}

/// What the maps know of a destination before anyone asks who connects.
///
/// Plain fields, each written on every path: an `Option` would leave its payload unwritten
/// when `None`, and the 5.10 and 6.1 verifiers reject the read of a stack slot the compiler
/// then shares between both paths.
struct Known {
    /// Whether it has a global entry (static addresses and the agent's own answers), and its
    /// set.
    global: bool,
    global_set: u32,
    /// Some scope may have learned it: it has a marker, or markers are being checked.
    learned: bool,
    /// Whether a static prefix holds it (looked up only without a global entry, which already
    /// includes the prefixes holding its address), and the prefix's set.
    prefix: bool,
    prefix_set: u32,
}

impl Known {
    /// `None` when no rule routes `dest` for anyone.
    #[inline(always)]
    fn of(dest: &[u8; 16]) -> Option<Self> {
        // SAFETY: plain data written whole by userspace.
        let (global, global_set) = match unsafe { ADDRESSES.get(dest) } {
            Some(known) => (true, known.set),
            None => (false, 0),
        };
        let marker = AddrKey {
            scope: MARKER_SCOPE,
            addr: *dest,
        };
        let flags = config().map_or(0, |c| c.flags);
        // SAFETY: plain data written by the learning program or the agent.
        let learned = flags & config_flags::MARKERS_INCOMPLETE != 0
            || unsafe { LEARNED.get(marker) }.is_some();
        let (prefix, prefix_set) = if !global && flags & config_flags::HAS_CIDRS != 0 {
            match CIDRS.get(Key::new(128, *dest)) {
                Some(prefix) => (true, prefix.set),
                None => (false, 0),
            }
        } else {
            (false, 0)
        };
        (global || learned || prefix).then_some(Self {
            global,
            global_set,
            learned,
            prefix,
            prefix_set,
        })
    }

    /// The target for a selected task: the scope's learned address, else the global address,
    /// else a static prefix; the first whose set the class routes on this port.
    #[inline(always)]
    fn target(
        &self,
        decision: &Decision,
        dest: &[u8; 16],
        proto: u8,
        port_be: u16,
    ) -> Option<Target> {
        let target = |set: u32| {
            let key = TargetKey {
                class: decision.class,
                set,
                proto,
                reserved: 0,
                port_be,
            };
            // SAFETY: plain data written whole by userspace.
            unsafe { TARGETS.get(key) }.copied()
        };
        if self.learned && decision.scope != MARKER_SCOPE {
            let key = AddrKey {
                scope: decision.scope,
                addr: *dest,
            };
            // SAFETY: plain data.
            if let Some(learned) = unsafe { LEARNED.get(key) }
                && let Some(found) = target(learned.set)
            {
                return Some(found);
            }
        }
        if self.global {
            return target(self.global_set);
        }
        if self.prefix {
            return target(self.prefix_set);
        }
        None
    }
}

/// What a target means for a socket of one family.
#[inline(always)]
fn verdict(target: &Target, v4_socket: bool, v6only: bool, dest: &[u8; 16]) -> Verdict {
    if target.flags & target_flags::REFUSE != 0 {
        count(stat::REFUSED);
        if target.flags & target_flags::QUIC != 0 {
            count(stat::QUIC_REFUSED);
        }
        count_slot(target.counter, |c| &mut c.refused);
        return Verdict::Refuse;
    }
    let v4 = mapped(u32::from_ne_bytes(target.gateway4));
    let gateway = if v4_socket {
        target.has_v4().then_some(v4)
    } else if is_v4_mapped(dest) {
        // A dual-stack socket reaches either family; the destination's own family first.
        if target.has_v4() {
            Some(v4)
        } else {
            target.has_v6().then_some(target.gateway6)
        }
    } else if target.has_v6() {
        Some(target.gateway6)
    } else {
        // A dual-stack IPv6 socket reaches an IPv4 gateway through its mapped address; an
        // IPV6_V6ONLY one cannot (the setsockopt hook noted it): refused, never direct.
        (target.has_v4() && !v6only).then_some(v4)
    };
    if let Some(gateway) = gateway {
        return Verdict::Rewrite(gateway, target.gateway_port_be, target.counter);
    }
    count(stat::FAMILY_MISMATCH);
    count(stat::REFUSED);
    count_slot(target.counter, |c| &mut c.family_mismatch);
    Verdict::Refuse
}
