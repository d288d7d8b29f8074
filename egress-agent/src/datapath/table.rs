//! A pinned hash map of this layout, typed, with errors that name it.

use std::os::fd::AsFd as _;

use aya::maps::{HashMap as BpfHashMap, IterableMap as _, Map, MapData, MapError};
use egress_common::maps::MapDef;

use tracing::warn;

use super::{DatapathError, sys};
use crate::bpffs::PinDir;

/// The update flag that creates an entry only if it does not exist.
const BPF_NOEXIST: u64 = 1;

/// A hash map of this layout, with errors that name it.
pub(super) struct Table<K: aya::Pod, V: aya::Pod> {
    def: MapDef,
    map: BpfHashMap<MapData, K, V>,
}

impl<K: aya::Pod + Ord, V: aya::Pod> Table<K, V> {
    pub(super) fn open(pins: &PinDir, def: MapDef) -> Result<Self, DatapathError> {
        Ok(Self {
            def,
            map: open(pins, def)?
                .try_into()
                .map_err(DatapathError::map(def.name))?,
        })
    }

    pub(super) fn entries(&self) -> Result<Vec<(K, V)>, DatapathError> {
        self.map
            .iter()
            .map(|item| item.map_err(DatapathError::map(self.def.name)))
            .collect()
    }

    pub(super) fn get(&self, key: &K) -> Result<Option<V>, DatapathError> {
        match self.map.get(key, 0) {
            Ok(value) => Ok(Some(value)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(err) => Err(DatapathError::map(self.def.name)(err)),
        }
    }

    pub(super) fn put(&mut self, key: &K, value: &V) -> Result<(), DatapathError> {
        self.map
            .insert(key, value, 0)
            .map_err(|err| full_or(err, self.def))
    }

    pub(super) fn delete(&mut self, key: &K) -> Result<(), DatapathError> {
        ignore_missing(self.map.remove(key)).map_err(DatapathError::map(self.def.name))
    }

    /// Removes `key` unless its value, read and removed in one step, is one to `keep`; such a
    /// value goes back at once, unless something wrote the key in between (that is newer).
    ///
    /// So an update made after the caller last read the entry is never lost, as a read
    /// followed by a delete would lose it. Kernels before 5.14 cannot remove and read hash map
    /// entries in one step: `Err` then says so ([`sys::lacks_lookup_and_delete`]).
    pub(super) fn remove_unless(
        &mut self,
        key: &K,
        keep: impl FnOnce(&V) -> bool,
    ) -> Result<Removal, std::io::Error>
    where
        V: Default,
    {
        let mut value = V::default();
        let fd = self.map.map().fd().as_fd();
        if !sys::lookup_and_delete(fd, key, &mut value)? {
            return Ok(Removal::Absent);
        }
        if !keep(&value) {
            return Ok(Removal::Removed);
        }
        match self.map.insert(key, value, BPF_NOEXIST) {
            Ok(()) => Ok(Removal::Kept),
            Err(MapError::SyscallError(err))
                if err.io_error.raw_os_error() == Some(libc::EEXIST) =>
            {
                Ok(Removal::Kept)
            }
            Err(err) => {
                let err = full_or(err, self.def);
                warn!(error = %err, "an entry to keep could not be put back: it is gone until written again");
                Ok(Removal::Lost)
            }
        }
    }
}

/// What [`Table::remove_unless`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Removal {
    /// The key was not there.
    Absent,
    /// The entry is gone.
    Removed,
    /// The entry was one to keep: it is back (or a newer one is there).
    Kept,
    /// The entry was one to keep, but putting it back failed (logged): it is gone.
    Lost,
}

/// Opens the map `def` pinned under `pins`.
pub(super) fn open(pins: &PinDir, def: MapDef) -> Result<Map, DatapathError> {
    let path = pins.map(def.name);
    if !path.exists() {
        return Err(DatapathError::NotInstalled { path: pins.maps() });
    }
    let data = MapData::from_pin(&path).map_err(DatapathError::map(def.name))?;
    Map::from_map_data(data).map_err(DatapathError::map(def.name))
}

/// A map's "no room" errors as [`DatapathError::Full`], others as they are.
pub(super) fn full_or(err: MapError, def: MapDef) -> DatapathError {
    if let MapError::SyscallError(syscall) = &err
        && matches!(
            syscall.io_error.raw_os_error(),
            Some(libc::ENOSPC | libc::E2BIG | libc::ENOMEM)
        )
    {
        return DatapathError::Full {
            map: def.name,
            capacity: def.max_entries,
        };
    }
    DatapathError::map(def.name)(err)
}

/// A removal of a missing key as success.
pub(super) fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(syscall))
            if syscall.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
