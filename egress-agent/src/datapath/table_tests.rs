//! These need the kernel (`CAP_BPF`): `cargo xtask test` runs them as root with the real-kernel
//! tests (`--ignored`); they fail, not skip, without it.

use std::os::fd::{FromRawFd as _, OwnedFd};

use egress_common::{AddrKey, AddrValue, maps as defs};

use super::*;

/// A fresh kernel hash map shaped like `LEARNED` (not preallocated, as `LEARNED`).
fn learned_table() -> Table<AddrKey, AddrValue> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_HASH: u32 = 1;
    const BPF_F_NO_PREALLOC: u32 = 1;
    let size = |n: usize| u32::try_from(n).expect("small");
    // `union bpf_attr` for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries, flags.
    let mut attr = [
        BPF_MAP_TYPE_HASH,
        size(size_of::<AddrKey>()),
        size(size_of::<AddrValue>()),
        16,
        BPF_F_NO_PREALLOC,
    ];
    let fd = sys::bpf(BPF_MAP_CREATE, &mut attr)
        .unwrap_or_else(|err| panic!("BPF_MAP_CREATE: {err} (these tests need root)"));
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).expect("an fd")) };
    let data = MapData::from_fd(fd).expect("the map's info");
    Table {
        def: defs::LEARNED,
        map: Map::from_map_data(data)
            .expect("a map")
            .try_into()
            .expect("a hash map of LEARNED's shape"),
    }
}

fn key(last: u8) -> AddrKey {
    let mut addr = [0; 16];
    addr[15] = last;
    AddrKey { scope: 7, addr }
}

fn expiring(expires_ns: u64) -> AddrValue {
    AddrValue {
        set: 1,
        source: 0,
        expires_ns,
    }
}

#[test]
#[ignore = "needs the kernel: run by `cargo xtask test` as root"]
fn an_entry_renewed_before_its_removal_is_kept() {
    let mut table = learned_table();
    let renewed = |value: &AddrValue| value.expires_ns >= 100;
    table.put(&key(1), &expiring(50)).expect("put");
    table.put(&key(2), &expiring(150)).expect("put");
    assert_eq!(
        table.remove_unless(&key(1), renewed).expect("remove"),
        Removal::Removed
    );
    assert_eq!(table.get(&key(1)).expect("get"), None);
    // What a renewal after the caller's read looks like to the removal: a value to keep.
    assert_eq!(
        table.remove_unless(&key(2), renewed).expect("remove"),
        Removal::Kept
    );
    assert_eq!(table.get(&key(2)).expect("get"), Some(expiring(150)));
    assert_eq!(
        table.remove_unless(&key(3), renewed).expect("remove"),
        Removal::Absent
    );
}
