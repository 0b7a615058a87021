//! Every byte layout the XDP program and user space share, defined once.
//!
//! Addresses and ports are kept in network byte order exactly as they sit in the
//! packet, so the data plane never swaps bytes on the hot path.
#![no_std]

use core::mem::size_of;

mod counters;
pub mod decap;
pub mod probe;
pub mod talkers;

pub use counters::*;

/// Map names, so the loader and the program cannot drift apart.
pub mod maps {
    /// Addresses that carry at least one service, to tell VIP traffic from the rest
    /// exactly when [`VIP_FILTER`] is not enough.
    pub const VIPS: &str = "VIPS";
    /// [`VIPS`] for IPv6 addresses (`[u32; 4]` keys): a map of its own so the IPv4
    /// path keeps its 4-byte key.
    pub const VIPS6: &str = "VIPS6";
    /// Per bucket of addresses, how many VIPs hash there: one array read keeps traffic
    /// for other addresses off every hash lookup.
    pub const VIP_FILTER: &str = "VIP_FILTER";
    /// (VIP, port, protocol) to service slot.
    pub const SERVICES: &str = "SERVICES";
    /// (IPv6 VIP, port, protocol) to service slot ([`crate::ServiceKey6`]).
    pub const SERVICES6: &str = "SERVICES6";
    /// All services' Maglev tables back to back, two u32 slots per u64 element, each
    /// service's table starting on an element boundary (see [`crate::ring_stride`]).
    pub const MAGLEV: &str = "MAGLEV";
    /// Backend slot to forwarding data.
    pub const BACKENDS: &str = "BACKENDS";
    /// 5-tuple to chosen backend: the flow table, shared by all CPUs.
    pub const FLOWS: &str = "FLOWS";
    /// [`FLOWS`] for IPv6 5-tuples ([`crate::FlowKey6`]).
    pub const FLOWS6: &str = "FLOWS6";
    /// Per CPU, a direct-mapped cache in front of [`FLOWS`]: an established packet costs
    /// an array read instead of a hash lookup.
    pub const FLOW_CACHE: &str = "FLOW_CACHE";
    /// [`FLOW_CACHE`] for IPv6 flows ([`crate::CachedFlow6`]); shares [`FLOW_EPOCH`].
    pub const FLOW_CACHE6: &str = "FLOW_CACHE6";
    /// Per [`FLOW_CACHE`] index, shared by all CPUs: how many SYNs that index has seen.
    /// A cached entry stored under an older epoch is checked against [`FLOWS`] again.
    pub const FLOW_EPOCH: &str = "FLOW_EPOCH";
    /// Interfaces the program may redirect to.
    pub const EGRESS: &str = "EGRESS";
    /// Per-CPU global counters, indexed by [`crate::Counter`].
    pub const GLOBAL_STATS: &str = "GLOBAL_STATS";
    /// Per-CPU traffic counters per backend slot.
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    /// New and changed [`FLOWS`] entries ([`crate::FlowEvent`]s) for flow sharing, written
    /// only while [`crate::SHARE_FLOWS_GLOBAL`] is on. Not pinned: it holds no state, and a
    /// restarted process makes its own.
    pub const FLOW_EVENTS: &str = "FLOW_EVENTS";
    /// Per-CPU counters of [`FLOW_EVENTS`] ([`crate::FlowEventCounters`]): a map of its own,
    /// so [`GLOBAL_STATS`] keeps the size it is pinned with and a pinned instance made
    /// before flow sharing existed is still adopted (its directory gains this map).
    pub const FLOW_EVENT_STATS: &str = "FLOW_EVENT_STATS";
    /// Per-CPU inserts into [`FLOWS`] by the data plane: this second's budget and the
    /// counters of proven and over-budget flows ([`crate::FlowInserts`]). A map of its own
    /// for the reason [`FLOW_EVENT_STATS`] is.
    pub const FLOW_INSERTS: &str = "FLOW_INSERTS";
    /// User space only: the sizes and version of the pinned layout (one [`crate::Layout`]).
    pub const LAYOUT: &str = "LAYOUT";
    /// User space only: per backend slot, who holds it ([`crate::BackendRecord`]).
    pub const BACKEND_RECORDS: &str = "BACKEND_RECORDS";
    /// User space only: per service slot, traffic of its departed backends.
    pub const SERVICE_RECORDS: &str = "SERVICE_RECORDS";
    /// Every map a pinned instance keeps, in the order they are pinned.
    pub const PINNED: &[&str] = &[
        VIPS,
        VIPS6,
        VIP_FILTER,
        SERVICES,
        SERVICES6,
        MAGLEV,
        BACKENDS,
        FLOWS,
        FLOWS6,
        FLOW_CACHE,
        FLOW_CACHE6,
        FLOW_EPOCH,
        EGRESS,
        GLOBAL_STATS,
        BACKEND_STATS,
        FLOW_EVENT_STATS,
        FLOW_INSERTS,
        BACKEND_RECORDS,
        SERVICE_RECORDS,
        LAYOUT,
    ];
}

/// Program names in the object.
pub mod programs {
    /// The balancer.
    pub const BALANCER: &str = "fulcrum";
    /// Returns `XDP_PASS`: lets a veth accept frames its peer transmits from XDP, and is
    /// the baseline of benchmarks.
    pub const PASS: &str = "fulcrum_pass";
}

/// Default entries of the per-CPU flow caches (a power of two; 32 bytes each for IPv4,
/// 56 for IPv6).
pub const DEFAULT_FLOW_CACHE: u32 = 1 << 16;

/// Name of the global holding the flow cache's index mask (entries − 1).
pub const FLOW_CACHE_MASK_GLOBAL: &str = "FLOW_CACHE_MASK";

/// Name of the global holding the Maglev table size, set by the loader before the
/// program is verified so the modulo is by a constant.
pub const RING_SIZE_GLOBAL: &str = "RING_SIZE";

/// Name of the global holding the number of possible CPUs, set by the loader so the
/// verifier walks a loop over the CPUs only that many times.
pub const CPUS_GLOBAL: &str = "CPUS";

/// Name of the global that turns [`FLOW_EVENTS`](maps::FLOW_EVENTS) on (non-zero), set
/// by the loader before verification: off, the verifier prunes the emission and it costs
/// nothing.
pub const SHARE_FLOWS_GLOBAL: &str = "SHARE_FLOWS";

/// Name of the global holding each CPU's budget of flow table inserts per second, set
/// by the loader before verification.
pub const FLOW_INSERT_BUDGET_GLOBAL: &str = "FLOW_INSERT_BUDGET";

/// Default inserts into the shared flow table per CPU per second. Legitimate new flows
/// above it are still forwarded by Maglev, only not pinned until a later second; a flood
/// of flows that prove themselves then replaces at most this many table entries per CPU
/// per second (a million-flow table outlives 100 s of it on one CPU).
pub const DEFAULT_FLOW_INSERT_BUDGET: u32 = 10_000;

/// Default Maglev table size: a prime well above 100 × the largest backend set.
pub const DEFAULT_RING_SIZE: u32 = 65_537;

/// Slots reserved per service in the Maglev map: the table size rounded up to even, so
/// two services never share a u64 element.
#[inline(always)]
pub const fn ring_stride(ring_size: u32) -> u32 {
    (ring_size + 1) & !1
}

/// Buckets of [`VIP_FILTER`](maps::VIP_FILTER).
pub const VIP_FILTER_SIZE: u32 = 1 << 16;

/// The [`VIP_FILTER`](maps::VIP_FILTER) bucket of an address (network byte order).
#[inline(always)]
pub const fn vip_filter_bucket(addr: u32) -> u32 {
    (addr ^ (addr >> 16)) & (VIP_FILTER_SIZE - 1)
}

/// The [`VIP_FILTER`](maps::VIP_FILTER) bucket of an IPv6 address (network byte order
/// words): the four words folded, then as for IPv4.
#[inline(always)]
pub const fn vip_filter_bucket6(addr: &[u32; 4]) -> u32 {
    vip_filter_bucket(addr[0] ^ addr[1] ^ addr[2] ^ addr[3])
}

/// Backend slot 0 is never allocated, so a zeroed Maglev slot means "no backend".
pub const NO_BACKEND: u32 = 0;

/// IP protocol numbers the balancer understands.
pub const IPPROTO_TCP: u8 = 6;
/// See [`IPPROTO_TCP`].
pub const IPPROTO_UDP: u8 = 17;

/// Value of [`VIPS`](maps::VIPS) and [`VIPS6`](maps::VIPS6): what the address answers
/// besides its services.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipInfo {
    /// Count of services on this address.
    pub services: u32,
    /// `VIP_F_*` bits.
    pub flags: u32,
}

/// [`VipInfo::flags`]: the balancer answers ICMP echo requests to this address.
pub const VIP_F_ECHO: u32 = 1 << 0;

/// Key of [`SERVICES`](maps::SERVICES). Port 0 stands for every port of the VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// IPv4 address, network byte order.
    pub vip: u32,
    /// Destination port, network byte order; 0 matches every port.
    pub port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    pub _pad: u8,
}

/// Key of [`SERVICES6`](maps::SERVICES6): [`ServiceKey`] for an IPv6 VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey6 {
    /// IPv6 address, four network byte order words.
    pub vip: [u32; 4],
    /// Destination port, network byte order; 0 matches every port.
    pub port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    pub _pad: u8,
}

/// Service flag: hash the source address only, so a client always lands on one backend.
pub const SERVICE_F_STICKY: u32 = 1 << 0;

/// Value of [`SERVICES`](maps::SERVICES).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Index into the Maglev region and the service counters.
    pub slot: u32,
    /// `SERVICE_F_*` bits.
    pub flags: u32,
}

/// Value of [`BACKENDS`](maps::BACKENDS): everything needed to forward to a backend in
/// any mode, whatever the family of the flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendValue {
    /// Next hop's MAC: the backend on its segment (L2) or the router (L3).
    pub mac: [u8; 6],
    /// MAC of the egress interface: the new source MAC.
    pub src_mac: [u8; 6],
    /// Egress interface; 0 while the next hop is unresolved.
    pub ifindex: u32,
    /// Bumped whenever the slot is given to another backend, so stale flows miss.
    pub generation: u32,
    /// `FORWARD_*`: how the frame reaches the backend.
    pub mode: u8,
    /// `BACKEND_V_*` bits.
    pub flags: u8,
    /// 802.1Q TCI the frame leaves with when [`BACKEND_V_VLAN`] is set, network order
    /// (VLAN id; PCP and DEI 0).
    pub vlan: u16,
    /// Egress MTU, host order (tunnel modes check it).
    pub mtu: u16,
    /// GUE destination port, network order.
    pub gue_port: u16,
    /// Network order; host bits of the outer source's last word taken from the flow hash
    /// (0: fixed source).
    pub src_mask: u32,
    /// Tunnel endpoint (the backend's address), IPv4 in word 0.
    pub dst: [u32; 4],
    /// Outer source, or the prefix the per-flow source is taken from.
    pub src: [u32; 4],
}

/// [`BackendValue::mode`]: layer-2 DSR, only the MACs (and maybe the VLAN tag) change.
pub const FORWARD_L2: u8 = 0;
/// [`BackendValue::mode`]: IP-in-IP to [`BackendValue::dst`].
pub const FORWARD_IPIP: u8 = 1;
/// [`BackendValue::mode`]: GUE (UDP, then the inner IP header) to [`BackendValue::dst`].
pub const FORWARD_GUE: u8 = 2;
/// [`BackendValue::flags`]: the outer header is IPv6.
pub const BACKEND_V_TUNNEL6: u8 = 1 << 0;
/// [`BackendValue::flags`]: the frame leaves tagged with [`BackendValue::vlan`] (the tag
/// rewritten, or pushed if it came untagged); unset, any tag is left as it came.
pub const BACKEND_V_VLAN: u8 = 1 << 1;

/// Key of [`FLOWS`](maps::FLOWS), in packet byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: u8,
    /// Split from `_pad` so zeroing it is two stores, not a memset call in BPF.
    pub _pad2: u16,
}

/// Key of [`FLOWS6`](maps::FLOWS6): [`FlowKey`] for IPv6, in packet byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey6 {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: u8,
    pub _pad2: u16,
}

/// Value of [`FLOWS`](maps::FLOWS).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// Backend slot.
    pub backend: u32,
    /// The backend slot's generation when the flow was pinned to it. Removing a service
    /// frees its backends, so this also tells that the service still exists.
    pub generation: u32,
}

/// Value of [`FLOW_CACHE`](maps::FLOW_CACHE): a flow table entry remembered by one CPU.
///
/// A new flow's choice for a 5-tuple the flow table does not hold (a SYN's, or a first
/// packet's without SYN, or a UDP flow's) lives only here (`pending`) until a further
/// packet of the flow, on any CPU, pins it in [`FLOWS`](maps::FLOWS) (within the insert
/// budget, [`FlowInserts`]): a flood of first packets from spoofed sources then never
/// churns the shared flow table or evicts established flows from it. A SYN for a 5-tuple the table holds rewrites that entry in place, and every
/// SYN moves its index's [`FLOW_EPOCH`](maps::FLOW_EPOCH) on, so no CPU's copy of an
/// older connection on the same 5-tuple is used again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedFlowOf<K> {
    pub key: K,
    pub value: FlowValue,
    /// Hits since the entry was cached; every [`FLOW_TOUCH_EVERY`]th also looks the flow
    /// up in [`FLOWS`](maps::FLOWS), so the LRU still sees which flows are alive.
    pub hits: u16,
    /// 1 while the flow is chosen but not yet in [`FLOWS`](maps::FLOWS).
    pub pending: u16,
    /// The index's [`FLOW_EPOCH`](maps::FLOW_EPOCH) when the entry was stored; the entry
    /// is used only while the two agree.
    pub epoch: u32,
}

/// Value of [`FLOW_CACHE`](maps::FLOW_CACHE).
pub type CachedFlow = CachedFlowOf<FlowKey>;
/// Value of [`FLOW_CACHE6`](maps::FLOW_CACHE6).
pub type CachedFlow6 = CachedFlowOf<FlowKey6>;

/// [`FlowEvent::family`] of an IPv4 flow: the key's addresses are in word 0.
pub const FLOW_FAMILY_IPV4: u32 = 4;
/// [`FlowEvent::family`] of an IPv6 flow.
pub const FLOW_FAMILY_IPV6: u32 = 6;

impl FlowKey6 {
    /// An IPv4 5-tuple in the dual-stack key (addresses in word 0, the rest zero).
    #[inline(always)]
    pub const fn from_v4(k: &FlowKey) -> Self {
        Self {
            src: [k.src, 0, 0, 0],
            dst: [k.dst, 0, 0, 0],
            sport: k.sport,
            dport: k.dport,
            proto: k.proto,
            _pad: 0,
            _pad2: 0,
        }
    }

    /// The IPv4 5-tuple held in word 0 (meaningful for [`FLOW_FAMILY_IPV4`] only).
    #[inline(always)]
    pub const fn to_v4(&self) -> FlowKey {
        FlowKey {
            src: self.src[0],
            dst: self.dst[0],
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            _pad: 0,
            _pad2: 0,
        }
    }
}

/// One entry of [`FLOW_EVENTS`](maps::FLOW_EVENTS): a flow the program just wrote to
/// [`FLOWS`](maps::FLOWS), as the table holds it. Slot numbers are this balancer's own:
/// user space names the service and backend by address before sharing it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// The 5-tuple; an IPv4 flow's addresses in word 0.
    pub key: FlowKey6,
    pub value: FlowValue,
    /// [`FLOW_FAMILY_IPV4`] or [`FLOW_FAMILY_IPV6`].
    pub family: u32,
    pub _pad: u32,
}

/// Value of [`FLOW_EVENT_STATS`](maps::FLOW_EVENT_STATS), per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEventCounters {
    /// Events written to the ring.
    pub emitted: u64,
    /// Events lost because the ring was full.
    pub lost: u64,
}

/// Value of [`FLOW_INSERTS`](maps::FLOW_INSERTS), per CPU: the insert budget's state and
/// its counters (user space sums `pinned` and `over_budget`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowInserts {
    /// The second (of `bpf_ktime_get_ns`) that `this_second` counts.
    pub second: u64,
    /// Inserts in that second.
    pub this_second: u64,
    /// Flows proven and inserted, ever.
    pub pinned: u64,
    /// Proven flows not inserted because the second's budget was spent.
    pub over_budget: u64,
}

/// See [`CachedFlow::hits`] (a power of two).
pub const FLOW_TOUCH_EVERY: u16 = 64;

/// Per-backend counters (per CPU; user space sums them, and sums a service's from its
/// backends', so a packet pays for one counter update, not two).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    pub packets: u64,
    pub bytes: u64,
    /// Flows this service or backend was chosen for.
    pub new_flows: u64,
}

const _: () = assert!(size_of::<VipInfo>() == 8);
const _: () = assert!(size_of::<ServiceKey>() == 8);
const _: () = assert!(size_of::<ServiceKey6>() == 20);
const _: () = assert!(size_of::<ServiceValue>() == 8);
const _: () = assert!(size_of::<BackendValue>() == 64);
const _: () = assert!(size_of::<FlowKey>() == 16);
const _: () = assert!(size_of::<FlowKey6>() == 40);
const _: () = assert!(size_of::<FlowValue>() == 8);
const _: () = assert!(size_of::<CachedFlow>() == 32);
const _: () = assert!(size_of::<CachedFlow6>() == 56);
const _: () = assert!(size_of::<TrafficCounters>() == 24);
const _: () = assert!(size_of::<FlowEvent>() == 56);
const _: () = assert!(size_of::<FlowEventCounters>() == 16);
const _: () = assert!(size_of::<FlowInserts>() == 32);

/// One round of the murmur3 finaliser: cheap, well mixed, identical in kernel and user space.
#[inline(always)]
pub const fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

const FLOW_HASH_SEED: u32 = 0x9e37_79b9;

/// Hash a flow picks its Maglev slot by. Every balancer computes the same value for the
/// same packet, which is what keeps a fleet consistent. Inputs are in packet byte order.
#[inline(always)]
pub const fn flow_hash(key: &FlowKey, sticky: bool) -> u32 {
    let mut h = mix32(FLOW_HASH_SEED ^ key.src);
    if !sticky {
        h = mix32(h ^ key.dst);
        h = mix32(h ^ ((key.sport as u32) << 16 | key.dport as u32));
        h = mix32(h ^ key.proto as u32);
    }
    h
}

/// [`flow_hash`] of an IPv6 flow: the same rounds over each address word, so every
/// balancer of a fleet agrees on it too.
#[inline(always)]
pub const fn flow_hash6(key: &FlowKey6, sticky: bool) -> u32 {
    let mut h = mix32(FLOW_HASH_SEED ^ key.src[0]);
    h = mix32(h ^ key.src[1]);
    h = mix32(h ^ key.src[2]);
    h = mix32(h ^ key.src[3]);
    if !sticky {
        h = mix32(h ^ key.dst[0]);
        h = mix32(h ^ key.dst[1]);
        h = mix32(h ^ key.dst[2]);
        h = mix32(h ^ key.dst[3]);
        h = mix32(h ^ ((key.sport as u32) << 16 | key.dport as u32));
        h = mix32(h ^ key.proto as u32);
    }
    h
}

/// [`flow_cache_index`] of an IPv6 flow: the address words folded first.
#[inline(always)]
pub const fn flow_cache_index6(flow: &FlowKey6) -> u32 {
    let src = flow.src[0] ^ flow.src[1] ^ flow.src[2] ^ flow.src[3];
    let dst = flow.dst[0] ^ flow.dst[1] ^ flow.dst[2] ^ flow.dst[3];
    let ports = (flow.sport as u32) << 16 | flow.dport as u32;
    let mixed = (src ^ dst.rotate_left(16) ^ ports ^ flow.proto as u32).wrapping_mul(0x9e37_79b1);
    mixed ^ (mixed >> 16)
}

/// Where a flow sits in each CPU's [`FLOW_CACHE`](maps::FLOW_CACHE) and its
/// [`FLOW_EPOCH`](maps::FLOW_EPOCH), before masking: one multiply, since the index only
/// has to spread flows on this balancer (the Maglev hash is what a fleet must agree on).
#[inline(always)]
pub const fn flow_cache_index(flow: &FlowKey) -> u32 {
    let ports = (flow.sport as u32) << 16 | flow.dport as u32;
    let mixed =
        (flow.src ^ flow.dst.rotate_left(16) ^ ports ^ flow.proto as u32).wrapping_mul(0x9e37_79b1);
    mixed ^ (mixed >> 16)
}

/// Version of the pinned layout: bumped whenever a pinned map's key, value, size rule or
/// meaning changes, so a new binary never reads state it would misunderstand.
pub const LAYOUT_VERSION: u32 = 2;

/// `"FLCM"`: marks a [`Layout`] written by Fulcrum.
pub const LAYOUT_MAGIC: u32 = u32::from_be_bytes(*b"FLCM");

/// Value of [`LAYOUT`](maps::LAYOUT): what a restarted daemon must agree with before it
/// adopts the pinned maps (their sizes are fixed when they are created).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub magic: u32,
    pub version: u32,
    pub ring_size: u32,
    pub max_services: u32,
    pub max_backends: u32,
    pub max_flows: u32,
    pub flow_cache: u32,
    pub _pad: u32,
}

/// [`BackendRecord::flags`]: the destination takes no new flows.
pub const BACKEND_F_DRAINED: u32 = 1 << 0;
/// [`BackendRecord::flags`]: this balancer asked the kernel for the neighbour entry.
pub const BACKEND_F_REQUESTED: u32 = 1 << 1;
/// [`BackendRecord::flags`]: the address is IPv6 (all four words); else IPv4 in word 0.
pub const BACKEND_F_IPV6: u32 = 1 << 2;

/// Value of [`BACKEND_RECORDS`](maps::BACKEND_RECORDS): the destination a backend slot
/// serves, which the data plane does not need but a restarted daemon does.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendRecord {
    /// Network byte order words: IPv4 in word 0, or IPv6 with [`BACKEND_F_IPV6`].
    pub address: [u32; 4],
    /// Service slot + 1; 0 while the backend slot is free.
    pub service: u32,
    pub weight: u32,
    /// Interface the backend is reached through.
    pub egress: u32,
    /// `BACKEND_F_*` bits.
    pub flags: u32,
}

/// Value of [`SERVICE_RECORDS`](maps::SERVICE_RECORDS).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceRecord {
    /// Traffic of the service's destinations since removed.
    pub retired: TrafficCounters,
}

const _: () = assert!(size_of::<Layout>() == 32);
const _: () = assert!(size_of::<BackendRecord>() == 32);
const _: () = assert!(size_of::<ServiceRecord>() == 24);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are repr(C), Copy, with explicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for VipInfo {}
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceKey6 {}
    unsafe impl aya::Pod for FlowKey6 {}
    unsafe impl aya::Pod for CachedFlow6 {}
    unsafe impl aya::Pod for ServiceValue {}
    unsafe impl aya::Pod for BackendValue {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowValue {}
    unsafe impl aya::Pod for CachedFlow {}
    unsafe impl aya::Pod for TrafficCounters {}
    unsafe impl aya::Pod for GlobalCounters {}
    unsafe impl aya::Pod for FlowEvent {}
    unsafe impl aya::Pod for FlowEventCounters {}
    unsafe impl aya::Pod for FlowInserts {}
    unsafe impl aya::Pod for Layout {}
    unsafe impl aya::Pod for BackendRecord {}
    unsafe impl aya::Pod for ServiceRecord {}
    unsafe impl aya::Pod for probe::ProbeCounters {}
}
