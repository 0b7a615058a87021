//! Top talkers: sampled per-prefix counts of the clients a backend slot receives from.
//!
//! The data plane counts 1 in [`SAMPLE_GLOBAL`] forwarded packets under the client's
//! address masked to the longest configured prefix of its family; user space sums over
//! CPUs, maps the backend slot to its service, aggregates shorter prefixes and scales.

/// Name of the per-CPU LRU hash map ([`TalkerKey`] to [`TalkerCounts`]). Not pinned: it
/// holds no state a restarted process needs.
pub const MAP: &str = "TOP_TALKERS";

/// Name of the global holding the sampling rate N (1 in N packets counted, 0 = off),
/// set by the loader: off, the verifier prunes the counting.
pub const SAMPLE_GLOBAL: &str = "TALKER_SAMPLE";

/// Name of the global holding the IPv4 prefix mask, network order.
pub const MASK4_GLOBAL: &str = "TALKER_MASK4";

/// Name of the global holding the IPv6 prefix mask, network order words.
pub const MASK6_GLOBAL: &str = "TALKER_MASK6";

/// Default entries of [`MAP`] (per CPU values; an evicted prefix restarts from zero).
pub const DEFAULT_ENTRIES: u32 = 1 << 14;

/// [`TalkerKey::family`] of IPv4 clients.
pub const FAMILY_IPV4: u32 = 4;
/// [`TalkerKey::family`] of IPv6 clients.
pub const FAMILY_IPV6: u32 = 6;

/// Key of [`MAP`]: keyed by backend slot rather than service, so packets of established
/// flows (which never look their service up) are counted without an extra lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TalkerKey {
    pub backend_slot: u32,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u32,
    /// The client's address masked to the prefix, network order words (IPv4 in word 0).
    pub prefix: [u32; 4],
}

/// Value of [`MAP`], per CPU: sampled packets, not yet scaled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TalkerCounts {
    pub packets: u64,
    /// Sampled packets that started a flow (chosen rather than found pinned).
    pub new_flows: u64,
}

/// A network-order mask of `len` leading bits of a 32-bit word.
pub const fn mask_word(len: u32) -> u32 {
    let host = match len {
        0 => 0,
        l if l >= 32 => u32::MAX,
        l => u32::MAX << (32 - l),
    };
    host.to_be()
}

/// A network-order mask of an IPv6 prefix of `len` bits.
pub const fn mask6(len: u32) -> [u32; 4] {
    let mut m = [0u32; 4];
    let mut i = 0;
    while i < 4 {
        let bits = len.saturating_sub(32 * i as u32);
        m[i] = mask_word(if bits > 32 { 32 } else { bits });
        i += 1;
    }
    m
}

const _: () = assert!(core::mem::size_of::<TalkerKey>() == 24);
const _: () = assert!(core::mem::size_of::<TalkerCounts>() == 16);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C) integers, no padding.
    unsafe impl aya::Pod for TalkerKey {}
    unsafe impl aya::Pod for TalkerCounts {}
}
