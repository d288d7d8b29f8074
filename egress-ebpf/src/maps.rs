//! The maps, declared from their definitions in egress-common (which the agent checks pinned
//! maps against), and the small accessors the programs share.
//!
//! The eBPF library adds the flags a map type requires (`BPF_F_NO_PREALLOC` for LPM tries)
//! itself; the definitions list them too, because that is what the kernel reports. The agent
//! pins every map by path (including the socket storage, a BTF map).

use aya_ebpf::{
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, ProgramArray},
};
use egress_common::{
    AddrKey, AddrValue, CgroupEntry, CidrValue, Config, Counters, Decision, Label, LabelKey,
    PatternValue, ResolvedKey, ResolverKey, SocketState, Target, TargetKey, limits,
    maps::{self as defs, MapDef},
};

/// The flags of `def` that the eBPF library does not add itself for LPM tries.
const fn extra(def: MapDef) -> u32 {
    def.flags & !defs::flags::NO_PREALLOC
}

#[map]
pub(crate) static CONFIG: Array<Config> = Array::with_max_entries(defs::CONFIG.max_entries, 0);

#[map]
pub(crate) static CGROUPS: HashMap<u64, CgroupEntry> =
    HashMap::with_max_entries(defs::CGROUPS.max_entries, defs::CGROUPS.flags);

#[map]
pub(crate) static DECISIONS: LruHashMap<u64, Decision> =
    LruHashMap::with_max_entries(defs::DECISIONS.max_entries, defs::DECISIONS.flags);

#[map]
pub(crate) static ADDRESSES: HashMap<[u8; 16], AddrValue> =
    HashMap::with_max_entries(defs::ADDRESSES.max_entries, defs::ADDRESSES.flags);

#[map]
pub(crate) static LEARNED: HashMap<AddrKey, AddrValue> =
    HashMap::with_max_entries(defs::LEARNED.max_entries, defs::LEARNED.flags);

#[map]
pub(crate) static CIDRS: LpmTrie<[u8; 16], CidrValue> =
    LpmTrie::with_max_entries(defs::CIDRS.max_entries, extra(defs::CIDRS));

#[map]
pub(crate) static TARGETS: HashMap<TargetKey, Target> =
    HashMap::with_max_entries(defs::TARGETS.max_entries, defs::TARGETS.flags);

#[map]
pub(crate) static PATTERNS: HashMap<u64, PatternValue> =
    HashMap::with_max_entries(defs::PATTERNS.max_entries, defs::PATTERNS.flags);

#[map]
pub(crate) static TRUSTED: HashMap<ResolverKey, u32> =
    HashMap::with_max_entries(defs::TRUSTED.max_entries, defs::TRUSTED.flags);

#[btf_map]
pub(crate) static SOCKETS: SkStorage<SocketState> = SkStorage::new();

#[map]
pub(crate) static COUNTERS: PerCpuHashMap<u32, Counters> =
    PerCpuHashMap::with_max_entries(defs::COUNTERS.max_entries, defs::COUNTERS.flags);

#[map]
pub(crate) static STATS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(defs::STATS.max_entries, defs::STATS.flags);

/// The learning programs' per-CPU work space (the stack is 512 bytes).
#[repr(C)]
pub(crate) struct Scratch {
    /// The DNS message.
    pub(crate) message: [u8; limits::DNS_MESSAGE],
    /// The question's label hashes, leftmost first.
    pub(crate) labels: [u64; limits::DNS_LABELS],
    /// Where reading the answer records stands, from one tail call to the next.
    pub(crate) parse: Parse,
}

/// The state of reading an answer's records.
#[repr(C)]
pub(crate) struct Parse {
    /// The identity of the name the CNAME chain has reached.
    pub(crate) chain: u64,
    /// The scope learned addresses go to.
    pub(crate) scope: u64,
    /// `bpf_ktime_get_ns` when the answer arrived.
    pub(crate) now: u64,
    /// Offset of the next record.
    pub(crate) pos: u32,
    /// The message's length.
    pub(crate) len: u32,
    /// Records read so far.
    pub(crate) index: u32,
    /// Records in the answer section.
    pub(crate) answers: u32,
    /// The pattern the question matched.
    pub(crate) pattern: u32,
    /// The smallest TTL along the chain so far.
    pub(crate) chain_ttl: u32,
}

const _: () = assert!(size_of::<Parse>() == defs::SCRATCH_STATE);

const _: () = assert!(size_of::<Scratch>() == defs::SCRATCH.value_size as usize);

#[map]
pub(crate) static SCRATCH: PerCpuArray<Scratch> =
    PerCpuArray::with_max_entries(defs::SCRATCH.max_entries, defs::SCRATCH.flags);

/// Index 0: `dns_answers`, set by the agent after loading.
#[map]
pub(crate) static ANSWERS: ProgramArray =
    ProgramArray::with_max_entries(defs::ANSWERS.max_entries, defs::ANSWERS.flags);

/// Written by userspace only (names for the CLI); declared here so that it is created and
/// pinned with the other maps.
#[map]
pub(crate) static LABELS: HashMap<LabelKey, Label> =
    HashMap::with_max_entries(defs::LABELS.max_entries, defs::LABELS.flags);

/// Written by userspace only (the resolver's answers, for restarts); pinned with the others.
#[map]
pub(crate) static RESOLVED: HashMap<ResolvedKey, u64> =
    HashMap::with_max_entries(defs::RESOLVED.max_entries, defs::RESOLVED.flags);

/// The settings, or `None` before the agent wrote them.
#[inline(always)]
pub(crate) fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

/// Adds one to a global counter.
#[inline(always)]
pub(crate) fn count(index: u32) {
    if let Some(counter) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, valid for the duration of the program; no other writer on
        // this CPU while we run.
        unsafe { *counter += 1 };
    }
}

/// Adds one to a field of a counter slot (created by the agent; a missing slot counts nothing).
#[inline(always)]
pub(crate) fn count_slot(slot: u32, field: impl FnOnce(&mut Counters) -> &mut u64) {
    if let Some(counters) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: as in `count`.
        unsafe { *field(&mut *counters) += 1 };
    }
}

/// `bpf_sk_storage_get` on `SOCKETS` for any socket pointer the verifier accepts (the
/// `sock_addr` context's `sk`, a full socket from an skb, or a `cgroup/sock` context).
///
/// # Safety
///
/// `sk` must be a socket pointer the calling program type may pass to the helper.
#[inline(always)]
pub(crate) unsafe fn socket_state(
    sk: *mut core::ffi::c_void,
    create: bool,
) -> Option<&'static mut SocketState> {
    let map = core::ptr::from_ref(&SOCKETS).cast_mut().cast();
    let flags = if create {
        u64::from(aya_ebpf::bindings::BPF_SK_STORAGE_GET_F_CREATE)
    } else {
        0
    };
    // SAFETY: `map` is the socket storage map; `sk` as the caller promises; a zeroed value is
    // created when asked.
    let state =
        unsafe { aya_ebpf::helpers::bpf_sk_storage_get(map, sk, core::ptr::null_mut(), flags) };
    // SAFETY: non-null means a valid value for the life of the program.
    unsafe { state.cast::<SocketState>().as_mut() }
}
