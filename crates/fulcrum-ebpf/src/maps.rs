//! Every map of the program. User space sizes them at load time (`set_max_entries`);
//! the sizes here are placeholders for a load that does not.

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use fulcrum_common::{
    BackendRecord, BackendValue, CachedFlow, CachedFlow6, FlowEventCounters, FlowInserts, FlowKey,
    FlowKey6, FlowValue, GlobalCounters, Layout, ServiceKey, ServiceKey6, ServiceRecord,
    ServiceValue, TrafficCounters, VIP_FILTER_SIZE, VipInfo,
    probe::ProbeCounters,
    talkers::{TalkerCounts, TalkerKey},
};

/// Written by user space when a service is added or removed; read per packet: a zero
/// bucket means "not a VIP" without a hash lookup.
#[map]
pub static VIP_FILTER: Array<u32> = Array::with_max_entries(VIP_FILTER_SIZE, 0);

/// Written by user space when a service is added or removed; read only when a packet's
/// bucket is not zero and it turns out malformed or serviceless, to tell VIP traffic
/// (dropped or counted as such) from other addresses (passed).
#[map]
pub static VIPS: HashMap<u32, VipInfo> = HashMap::with_max_entries(1024, 0);

/// [`VIPS`] for IPv6 addresses.
#[map]
pub static VIPS6: HashMap<[u32; 4], VipInfo> = HashMap::with_max_entries(1024, 0);

/// Written by user space; read per VIP packet.
#[map]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::with_max_entries(1024, 0);

/// [`SERVICES`] for IPv6 VIPs.
#[map]
pub static SERVICES6: HashMap<ServiceKey6, ServiceValue> = HashMap::with_max_entries(1024, 0);

/// Written by user space through mmap (hence `BPF_F_MMAPABLE`); read on new flows. Two
/// u32 slots per element: the kernel pads array values to 8 bytes anyway.
#[map]
pub static MAGLEV: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Written by user space (neighbour changes, backend churn); read per forwarded packet.
#[map]
pub static BACKENDS: Array<BackendValue> = Array::with_max_entries(1, 0);

/// Written here on every new flow, and rewritten in place by a SYN for a 5-tuple it
/// holds; user space reads it (counts, scans for flow sharing) and writes only flows
/// imported from other balancers. LRU lists per
/// CPU: inserting a flow takes no lock shared with other CPUs.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(1, BPF_F_NO_COMMON_LRU);

/// [`FLOWS`] for IPv6 flows.
#[map]
pub static FLOWS6: LruHashMap<FlowKey6, FlowValue> =
    LruHashMap::with_max_entries(1, BPF_F_NO_COMMON_LRU);

/// Written and read here only, each CPU its own: no other writer can tear an entry.
#[map]
pub static FLOW_CACHE: PerCpuArray<CachedFlow> = PerCpuArray::with_max_entries(1, 0);

/// [`FLOW_CACHE`] for IPv6 flows; shares [`FLOW_EPOCH`].
#[map]
pub static FLOW_CACHE6: PerCpuArray<CachedFlow6> = PerCpuArray::with_max_entries(1, 0);

/// Bumped here by every SYN, at its flow cache index; read on every flow cache hit. One
/// entry per cache index, shared by all CPUs (see `CachedFlow::epoch`); 64 bits because
/// BPF has atomic adds of 64 bits only (without ALU32).
#[map]
pub static FLOW_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// Written here, only while flow sharing is on, whenever an entry of [`FLOWS`] is
/// created or changed; read by user space, which shares the flows with other balancers.
#[map]
pub static FLOW_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Written here with each [`FLOW_EVENTS`] entry, or its loss; summed by user space.
#[map]
pub static FLOW_EVENT_STATS: PerCpuArray<FlowEventCounters> = PerCpuArray::with_max_entries(1, 0);

/// Written here when a proven flow is inserted into [`FLOWS`] or refused by the budget;
/// user space sums its counters.
#[map]
pub static FLOW_INSERTS: PerCpuArray<FlowInserts> = PerCpuArray::with_max_entries(1, 0);

/// Written by user space when it attaches to an interface; read to redirect.
#[map]
pub static EGRESS: DevMapHash = DevMapHash::with_max_entries(64, 0);

/// Written here; summed by user space.
#[map]
pub static GLOBAL_STATS: PerCpuArray<GlobalCounters> = PerCpuArray::with_max_entries(1, 0);

/// Written here; summed by user space.
#[map]
pub static BACKEND_STATS: PerCpuArray<TrafficCounters> = PerCpuArray::with_max_entries(1, 0);

/// Written and read by user space only: the layout a pinned instance was created with.
#[map]
pub static LAYOUT: Array<Layout> = Array::with_max_entries(1, 0);

/// Written and read by user space only: which destination holds each backend slot.
#[map]
pub static BACKEND_RECORDS: Array<BackendRecord> = Array::with_max_entries(1, 0);

/// Written and read by user space only: each service's retired traffic.
#[map]
pub static SERVICE_RECORDS: Array<ServiceRecord> = Array::with_max_entries(1, 0);

const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Written by user space for each health probe that goes through a tunnel; read by the
/// probe program for packets carrying a probe mark.
#[map]
pub static PROBES: HashMap<u32, BackendValue> = HashMap::with_max_entries(1024, 0);

/// Written by the probe program; summed by user space.
#[map]
pub static PROBE_STATS: PerCpuArray<ProbeCounters> = PerCpuArray::with_max_entries(1, 0);

/// Written here for sampled packets (see `talkers`), when sampling is on; summed by user
/// space. LRU lists per CPU, as for [`FLOWS`]: a flood of prefixes takes no shared lock.
#[map]
pub static TOP_TALKERS: LruPerCpuHashMap<TalkerKey, TalkerCounts> =
    LruPerCpuHashMap::with_max_entries(1, BPF_F_NO_COMMON_LRU);
