//! The Maglev region, written through mmap: a table change costs memory stores, not one
//! syscall per slot.
//!
//! The kernel lays array elements out 8 bytes apart (`round_up(value_size, 8)`), so the
//! map holds u64 elements of two u32 slots each (low half first), and each service's
//! table starts on an element: `ring_stride` slots per service.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use fulcrum_common::ring_stride;

use crate::BalancerError;

/// All services' tables, `ring_size` slots each, shared with the XDP program.
pub(crate) struct Rings {
    ptr: NonNull<AtomicU64>,
    len: usize,
    bytes: usize,
    /// Elements per service.
    cells: usize,
    /// Keeps the map alive as long as the mapping.
    _map: MapData,
}

// SAFETY: the mapping is owned by this value; slots are atomics.
unsafe impl Send for Rings {}
unsafe impl Sync for Rings {}

impl Rings {
    /// Elements the map needs for `services` tables of `ring_size` slots.
    pub(crate) fn elements(services: u32, ring_size: u32) -> u64 {
        u64::from(services) * u64::from(ring_stride(ring_size)) / 2
    }

    pub(crate) fn new(map: MapData, services: u32, ring_size: u32) -> Result<Self, BalancerError> {
        let len = Self::elements(services, ring_size) as usize;
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let bytes = (len * 8).div_ceil(page) * page;
        // SAFETY: a shared mapping of an mmapable array map of at least `len` u32s.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(BalancerError::Sys {
                call: "mmap of the Maglev map",
                source: std::io::Error::last_os_error(),
            });
        }
        let ptr = NonNull::new(ptr.cast()).ok_or(BalancerError::Sys {
            call: "mmap of the Maglev map",
            source: std::io::Error::from_raw_os_error(libc::EFAULT),
        })?;
        Ok(Self {
            ptr,
            len,
            bytes,
            cells: ring_stride(ring_size) as usize / 2,
            _map: map,
        })
    }

    fn ring(&self, slot: u32) -> &[AtomicU64] {
        let start = slot as usize * self.cells;
        let end = (start + self.cells).min(self.len);
        let start = start.min(end);
        // SAFETY: in bounds of the mapping, which lives as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), end - start) }
    }

    /// Stores the elements of `table` that differ from what the ring holds; returns how
    /// many changed.
    pub(crate) fn write(&self, slot: u32, table: &[u32]) -> usize {
        let mut changed = 0;
        for (cell, pair) in self.ring(slot).iter().zip(table.chunks(2)) {
            let low = pair.first().copied().unwrap_or(0);
            let high = pair.get(1).copied().unwrap_or(0);
            let want = u64::from(low) | u64::from(high) << 32;
            if cell.load(Ordering::Relaxed) != want {
                cell.store(want, Ordering::Relaxed);
                changed += 1;
            }
        }
        changed
    }

    /// Empties a service's ring.
    pub(crate) fn clear(&self, slot: u32) {
        for cell in self.ring(slot) {
            cell.store(0, Ordering::Relaxed);
        }
    }
}

impl Drop for Rings {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes) };
    }
}
