//! The Maglev region, written through mmap: a table change costs memory stores, not one
//! syscall per slot.
//!
//! The kernel lays array elements out 8 bytes apart (`round_up(value_size, 8)`), so each
//! u32 slot is the low half of one u64 cell of the mapping.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;

use crate::BalancerError;

/// All services' tables, `ring_size` slots each, shared with the XDP program.
pub(crate) struct Rings {
    ptr: NonNull<AtomicU64>,
    len: usize,
    bytes: usize,
    ring_size: u32,
    /// Keeps the map alive as long as the mapping.
    _map: MapData,
}

// SAFETY: the mapping is owned by this value; slots are atomics.
unsafe impl Send for Rings {}
unsafe impl Sync for Rings {}

impl Rings {
    pub(crate) fn new(map: MapData, services: u32, ring_size: u32) -> Result<Self, BalancerError> {
        let len = services as usize * ring_size as usize;
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
            ring_size,
            _map: map,
        })
    }

    fn ring(&self, slot: u32) -> &[AtomicU64] {
        let start = slot as usize * self.ring_size as usize;
        let end = (start + self.ring_size as usize).min(self.len);
        let start = start.min(end);
        // SAFETY: in bounds of the mapping, which lives as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), end - start) }
    }

    /// Stores the slots of `table` that differ from what the ring holds; returns how many.
    pub(crate) fn write(&self, slot: u32, table: &[u32]) -> usize {
        let mut changed = 0;
        for (cell, &want) in self.ring(slot).iter().zip(table) {
            let want = u64::from(want);
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
