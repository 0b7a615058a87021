//! The decapsulator's maps; user space fills the address and port maps and sums the counters.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use fulcrum_common::decap::DecapCounters;

/// Written by user space (the interface's addresses, refreshed, plus explicit ones); read
/// for every tunnel packet with an IPv4 outer header.
#[map]
pub static DECAP_ADDRS4: HashMap<u32, u8> = HashMap::with_max_entries(256, 0);

/// As [`DECAP_ADDRS4`], for IPv6 outer headers.
#[map]
pub static DECAP_ADDRS6: HashMap<[u32; 4], u8> = HashMap::with_max_entries(256, 0);

/// Written by user space at start; read for UDP packets to tell GUE from other traffic.
#[map]
pub static DECAP_GUE_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(16, 0);

/// Written here; summed by user space.
#[map]
pub static DECAP_STATS: PerCpuArray<DecapCounters> = PerCpuArray::with_max_entries(1, 0);
