//! Learning hostname addresses from the DNS answers selected workloads receive, before the
//! answer reaches the socket.
//!
//! * Egress: a selected socket's query to a trusted resolver (address and port in `TRUSTED`)
//!   leaves its id in the socket's storage.
//! * Ingress: an answer from a trusted resolver, to a query id the socket sent, whose question
//!   name matches a pattern (an exact hostname or a wildcard) is read: the A and AAAA records at
//!   the end of the CNAME chain that starts at the question become `LEARNED` entries in the
//!   socket's scope (its selected cgroup entry), with their TTL plus grace.
//!
//! Scoping is the trust boundary: an answer a workload forges to itself (with `CAP_NET_RAW`)
//! lands in its own scope and steers only its own connections.
//!
//! Every other packet leaves early: at once when its socket is connected to a port that is not
//! a DNS port (bulk traffic), else after its headers when it is not from or to a DNS port or
//! its socket has no storage (was not created by a selected task).

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_ktime_get_ns, bpf_sk_fullsock, bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id},
    programs::SkBuffContext,
};
use egress_common::{
    AddrKey, AddrValue, Config, Decision, MARKER_SCOPE, PatternValue, ResolverKey, SocketState,
    cgroup_kind, config_flags, limits, name, socket_flags, source, stat,
};

use crate::{
    addr::mapped,
    dns::{self, Buffer, MAX_LABELS},
    maps::{
        ANSWERS, CGROUPS, LEARNED, PATTERNS, Parse, SCRATCH, Scratch, TRUSTED, config, count,
        socket_state,
    },
    packet::Headers,
};

/// `cgroup_skb` verdict: let the packet through (these programs never drop).
pub(crate) const PASS: i32 = 1;
/// Answer records read per message (S3 and ELB answers carry 8 addresses; a longer answer is
/// learned up to here and counted unparsed).
pub(crate) const MAX_ANSWERS: u32 = 32;
/// Records read per tail call (the 5.10 verifier's budget bounds a program, not a chain of
/// tail calls, which the kernel limits to 33).
const RECORDS_PER_CALL: u32 = 1;
/// DNS record types and class.
const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// Whether the packet's socket is connected to a port that is not a DNS port: then none of its
/// packets is a query or an answer, and the program leaves before reading the packet (the
/// bulk-traffic fast exit). Unconnected sockets (remote port 0) are read.
#[inline(always)]
fn connected_elsewhere(ctx: &SkBuffContext, config: &Config) -> bool {
    // SAFETY: the context is valid for the life of the program; the kernel rewrites this read
    // into one of the packet's socket (0 without one), the port in the upper half.
    let remote = unsafe { (*ctx.skb.skb).remote_port };
    let port_be = (remote >> 16) as u16;
    port_be != 0 && !is_dns_port(config, port_be)
}

/// Whether `port_be` is one of the configured DNS ports.
#[inline(always)]
fn is_dns_port(config: &Config, port_be: u16) -> bool {
    port_be != 0
        && (config.dns_ports_be[0] == port_be
            || config.dns_ports_be[1] == port_be
            || config.dns_ports_be[2] == port_be
            || config.dns_ports_be[3] == port_be)
}

#[inline(always)]
fn trusted(addr: [u8; 16], port_be: u16) -> bool {
    let key = ResolverKey {
        addr,
        port_be,
        reserved: [0; 6],
    };
    // SAFETY: plain data.
    unsafe { TRUSTED.get(key) }.is_some()
}

/// The full socket of the packet.
#[inline(always)]
fn full_socket(ctx: &SkBuffContext) -> Option<*mut core::ffi::c_void> {
    // SAFETY: the context is valid for the life of the program.
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return None;
    }
    // SAFETY: a non-null socket of the packet; a request or timewait socket gives null.
    let sk = unsafe { bpf_sk_fullsock(sk) };
    (!sk.is_null()).then_some(sk.cast())
}

/// Egress: remembers the ids of DNS queries selected sockets send to trusted resolvers.
#[inline(always)]
pub(crate) fn try_dns_egress(ctx: &SkBuffContext) -> Result<i32, i32> {
    let config = config().ok_or(PASS)?;
    if config.flags & config_flags::LEARN == 0 || connected_elsewhere(ctx, config) {
        return Ok(PASS);
    }
    let headers = Headers::parse(ctx).ok_or(PASS)?;
    if !is_dns_port(config, headers.dest_port_be) || !trusted(headers.dest, headers.dest_port_be) {
        return Ok(PASS);
    }
    let sk = full_socket(ctx).ok_or(PASS)?;
    // SAFETY: a full socket, which cgroup_skb programs may pass to the helper.
    let state = match unsafe { socket_state(sk, false) } {
        Some(state) => state,
        // A socket created before its cgroup was selected (or before the agent ran): decide
        // by the socket's cgroup now.
        None => adopt(ctx, sk, config).ok_or(PASS)?,
    };
    if state.class == 0 {
        return Ok(PASS);
    }
    let message = headers.message(ctx).ok_or(PASS)?;
    let header: [u8; 4] = ctx.load(message.offset as usize).map_err(|_| PASS)?;
    if header[2] & 0x80 != 0 {
        return Ok(PASS); // a response, not a query
    }
    let index = state.dns_next as usize % limits::DNS_PENDING;
    state.dns_ids[index] = u16::from_be_bytes([header[0], header[1]]);
    state.dns_next = state.dns_next.wrapping_add(1);
    state.flags |= socket_flags::DNS;
    Ok(PASS)
}

/// Gives a selected socket without storage (created before its cgroup was selected) a
/// decision from the socket's own cgroup.
#[inline(always)]
fn adopt(
    ctx: &SkBuffContext,
    sk: *mut core::ffi::c_void,
    config: &Config,
) -> Option<&'static mut SocketState> {
    let mut decision = Decision {
        generation: config.generation,
        ..Decision::default()
    };
    for level in 0..limits::MAX_CGROUP_DEPTH {
        // SAFETY: the context is valid for the life of the program.
        let id = unsafe { bpf_skb_ancestor_cgroup_id(ctx.as_ptr().cast(), level.cast_signed()) };
        if id == 0 {
            break;
        }
        // SAFETY: plain data written whole by userspace.
        if let Some(entry) = unsafe { CGROUPS.get(id) } {
            let selected = entry.kind == cgroup_kind::SELECTED;
            decision.scope = if selected { id } else { 0 };
            decision.class = if selected { entry.class } else { 0 };
        }
    }
    if decision.class == 0 {
        return None;
    }
    // SAFETY: a full socket, as above.
    let state = unsafe { socket_state(sk, true) }?;
    state.generation = decision.generation;
    // SAFETY: the context is valid.
    state.creator = unsafe { bpf_skb_cgroup_id(ctx.as_ptr().cast()) };
    state.scope = decision.scope;
    state.class = decision.class;
    state.flags |= socket_flags::DECIDED;
    Some(state)
}

/// Ingress: learns the addresses of answers to those queries.
#[inline(always)]
pub(crate) fn try_dns_ingress(ctx: &SkBuffContext) -> Result<i32, i32> {
    let config = config().ok_or(PASS)?;
    if config.flags & config_flags::LEARN == 0 || connected_elsewhere(ctx, config) {
        return Ok(PASS);
    }
    let headers = Headers::parse(ctx).ok_or(PASS)?;
    if !is_dns_port(config, headers.source_port_be) {
        return Ok(PASS);
    }
    let sk = full_socket(ctx).ok_or(PASS)?;
    // SAFETY: a full socket, which cgroup_skb programs may pass to the helper.
    let state = unsafe { socket_state(sk, false) }.ok_or(PASS)?;
    if state.flags & socket_flags::DNS == 0 || state.scope == 0 {
        return Ok(PASS);
    }
    if !trusted(headers.source, headers.source_port_be) {
        count(stat::UNTRUSTED);
        return Ok(PASS);
    }
    let Some(message) = headers.message(ctx) else {
        if headers.has_payload(ctx) {
            count(stat::UNPARSED);
        }
        return Ok(PASS);
    };
    let len = u64::from(message.len);
    if !message.whole || len < 12 || len > limits::DNS_MESSAGE as u64 {
        count(stat::UNPARSED);
        return Ok(PASS);
    }
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(PASS)?;
    // SAFETY: the per-CPU value, valid for the life of the program; nothing else uses it on
    // this CPU while we run.
    let scratch = unsafe { &mut *scratch };
    // The verifier must see the size in [1, DNS_MESSAGE] in the register the helper gets: hide
    // the range LLVM knows (so it keeps the arithmetic) and clamp with arithmetic the verifier
    // follows. For the lengths that passed the check above this is the identity.
    // SAFETY: reading a local.
    let size = unsafe { core::ptr::read_volatile(&raw const len) };
    let size = ((size - 1) & (limits::DNS_MESSAGE as u64 - 1)) + 1;
    // SAFETY: the message buffer holds DNS_MESSAGE bytes and `size` fits it.
    let loaded = unsafe {
        aya_ebpf::helpers::bpf_skb_load_bytes(
            ctx.as_ptr().cast(),
            message.offset,
            scratch.message.as_mut_ptr().cast(),
            size as u32,
        )
    };
    let len = len as u32;
    if loaded != 0 {
        count(stat::UNPARSED);
        return Ok(PASS);
    }
    if !answers_pending_query(&scratch.message, state) {
        count(stat::UNTRUSTED);
        return Ok(PASS);
    }
    if learn(ctx, scratch, len, config, state.scope).is_none() {
        count(stat::UNPARSED);
    }
    Ok(PASS)
}

/// Whether the message answers one of the queries the socket sent.
#[inline(always)]
fn answers_pending_query(buf: &Buffer, state: &SocketState) -> bool {
    let id = dns::u16_at(buf, 0);
    state.dns_ids.contains(&id)
}

/// Reads the message's question and, when it matches a pattern, starts reading its answer
/// records (see [`try_dns_answers`]). `None` when the message cannot be read.
#[inline(always)]
fn learn(
    ctx: &SkBuffContext,
    scratch: &mut Scratch,
    len: u32,
    config: &Config,
    scope: u64,
) -> Option<()> {
    let buf = &scratch.message;
    let flags = dns::u16_at(buf, 2);
    // A response (QR), a standard query (opcode 0), no error (rcode 0); anything else has no
    // addresses to learn.
    if flags & 0x8000 == 0 || flags & 0x7800 != 0 || flags & 0x000f != 0 {
        return Some(());
    }
    if dns::u16_at(buf, 4) != 1 {
        return None;
    }
    let answers = u32::from(dns::u16_at(buf, 6));
    let question = dns::question(buf, &mut scratch.labels, 12, len)?;
    let qtype = dns::u16_at(buf, question.end);
    if dns::u16_at(buf, question.end + 2) != CLASS_IN || (qtype != TYPE_A && qtype != TYPE_AAAA) {
        return Some(());
    }
    let Some(pattern) = matching_pattern(&question, &scratch.labels, config.name_seed) else {
        return Some(());
    };
    count(stat::ANSWERS);
    scratch.parse = Parse {
        chain: question.identity,
        scope,
        // SAFETY: a helper with no arguments.
        now: unsafe { bpf_ktime_get_ns() },
        pos: question.end + 4,
        len,
        index: 0,
        answers,
        pattern,
        chain_ttl: u32::MAX,
    };
    // SAFETY: a tail call into `dns_answers`; on success it does not return here.
    unsafe { ANSWERS.tail_call(ctx, 0) };
    // Not installed (or the tail call limit): nothing more can be read.
    None
}

/// Tail-called: reads up to [`RECORDS_PER_CALL`] answer records where the parse stands, learns
/// the addresses at the end of the chain, and calls itself for the next ones.
#[inline(always)]
pub(crate) fn try_dns_answers(ctx: &SkBuffContext) -> Result<i32, i32> {
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(PASS)?;
    // SAFETY: the per-CPU value, valid for the life of the program; the caller on this CPU
    // filled it and nothing else runs here meanwhile.
    let scratch = unsafe { &mut *scratch };
    let Some(more) = read_records(scratch) else {
        count(stat::UNPARSED);
        return Ok(PASS);
    };
    if more {
        if scratch.parse.index >= MAX_ANSWERS {
            // More answers than read: what was read is learned, the rest is the resolver's.
            count(stat::UNPARSED);
            return Ok(PASS);
        }
        // SAFETY: a tail call into this same program.
        unsafe { ANSWERS.tail_call(ctx, 0) };
        count(stat::UNPARSED);
    }
    Ok(PASS)
}

/// Reads up to [`RECORDS_PER_CALL`] records; `Some(true)` when more remain.
#[inline(always)]
fn read_records(scratch: &mut Scratch) -> Option<bool> {
    let config = config()?;
    let buf = &scratch.message;
    let parse = &mut scratch.parse;
    let len = parse.len;
    for _ in 0..RECORDS_PER_CALL {
        if parse.index >= parse.answers {
            return Some(false);
        }
        parse.index += 1;
        let (owner, after) = dns::identity(buf, parse.pos, len)?;
        if after + 10 > len {
            return None;
        }
        let rtype = dns::u16_at(buf, after);
        let class = dns::u16_at(buf, after + 2);
        let ttl = dns::u32_at(buf, after + 4);
        let rdlen = u32::from(dns::u16_at(buf, after + 8));
        let rdata = after + 10;
        if rdata + rdlen > len {
            return None;
        }
        parse.pos = rdata + rdlen;
        if owner != parse.chain || class != CLASS_IN {
            continue;
        }
        match rtype {
            TYPE_CNAME => {
                parse.chain = dns::identity(buf, rdata, len)?.0;
                parse.chain_ttl = parse.chain_ttl.min(ttl);
            }
            TYPE_A if rdlen == 4 => {
                let addr = mapped(u32::from_ne_bytes([
                    dns::byte(buf, rdata),
                    dns::byte(buf, rdata + 1),
                    dns::byte(buf, rdata + 2),
                    dns::byte(buf, rdata + 3),
                ]));
                remember(parse, addr, ttl, config);
            }
            TYPE_AAAA if rdlen == 16 => {
                let mut addr = [0_u8; 16];
                for (i, byte) in addr.iter_mut().enumerate() {
                    *byte = dns::byte(buf, rdata + i as u32);
                }
                remember(parse, addr, ttl, config);
            }
            _ => {}
        }
    }
    Some(parse.index < parse.answers)
}

/// The pattern the question name matches: the exact name, else the most specific wildcard.
#[inline(always)]
fn matching_pattern(
    question: &dns::Question,
    labels: &[u64; MAX_LABELS],
    seed: u64,
) -> Option<u32> {
    let mut acc = seed;
    let mut found = None;
    let count = question.count;
    for step in 0..MAX_LABELS {
        if step >= count {
            break;
        }
        let index = (count - 1 - step) & (MAX_LABELS - 1);
        // Suffixes with at least one label before them match wildcards (never the apex).
        if index > 0 {
            acc = name::combine(acc, labels[index]);
            let wildcard = name::combine(acc, name::STAR);
            // SAFETY: plain data written whole by userspace.
            if let Some(value) = unsafe { PATTERNS.get(wildcard) } {
                found = Some(value.pattern);
            }
        } else {
            acc = name::combine(acc, labels[0]);
        }
    }
    // SAFETY: as above.
    let exact: Option<&PatternValue> = unsafe { PATTERNS.get(acc) };
    exact.map(|value| value.pattern).or(found)
}

/// Stores a learned address in the parse's scope, keeping a later expiry it already has.
#[inline(always)]
fn remember(parse: &Parse, addr: [u8; 16], ttl: u32, config: &Config) {
    let (scope, pattern, now) = (parse.scope, parse.pattern, parse.now);
    let ttl = ttl.min(parse.chain_ttl);
    let ttl_ns = (u64::from(ttl) * 1_000_000_000)
        .max(config.min_ttl_ns)
        .min(config.max_ttl_ns.max(config.min_ttl_ns));
    let key = AddrKey { scope, addr };
    let mut expires_ns = now + ttl_ns + config.grace_ns;
    // SAFETY: plain data.
    if let Some(known) = unsafe { LEARNED.get(key) }
        && known.set == pattern
    {
        expires_ns = expires_ns.max(known.expires_ns);
    }
    let value = AddrValue {
        set: pattern,
        source: source::LEARNED,
        expires_ns,
    };
    if LEARNED.insert(key, value, 0).is_err() {
        count(stat::LEARN_FAILED);
        return;
    }
    // The marker after the entry: the agent's marker sweep relies on this order. An entry
    // without its marker would be invisible to connects, so it goes if the marker cannot be
    // written. A marker present stays as it is (its value is never read): if the agent
    // removes it after this check, the sweep's second read finds the entry and marks it.
    let marker_key = AddrKey {
        scope: MARKER_SCOPE,
        addr,
    };
    // SAFETY: plain data.
    if unsafe { LEARNED.get(marker_key) }.is_some() {
        count(stat::LEARNED);
        return;
    }
    let marker_value = AddrValue {
        source: source::MARKER,
        ..value
    };
    if LEARNED.insert(marker_key, marker_value, 0).is_ok() {
        count(stat::LEARNED);
    } else {
        let _ = LEARNED.remove(key);
        count(stat::LEARN_FAILED);
    }
}
