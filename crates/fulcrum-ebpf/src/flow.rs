//! Flow state: this CPU's cache, the shared flow table, and SYNs pending in another CPU's
//! cache. Written once, generic over the address family ([`Family`]): IPv4 and IPv6 keep
//! maps of their own, so an IPv4 flow costs what it did before IPv6 existed.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_ktime_get_ns, bpf_map_lookup_percpu_elem},
    maps::{LruHashMap, PerCpuArray},
};
use fulcrum_common::{
    BackendValue, CachedFlowOf, Counter, DEFAULT_FLOW_CACHE, DEFAULT_FLOW_INSERT_BUDGET,
    FLOW_FAMILY_IPV4, FLOW_FAMILY_IPV6, FLOW_TOUCH_EVERY, FlowKey, FlowKey6, FlowValue,
    ServiceValue, VipInfo, flow_cache_index, flow_cache_index6, flow_hash, flow_hash6,
};

use crate::{
    choose, flow_events,
    maps::{
        BACKENDS, FLOW_CACHE, FLOW_CACHE6, FLOW_EPOCH, FLOW_INSERTS, FLOWS, FLOWS6, VIPS, VIPS6,
    },
};

/// Flow cache entries − 1; the loader overwrites it before verification.
#[unsafe(no_mangle)]
static FLOW_CACHE_MASK: u32 = DEFAULT_FLOW_CACHE - 1;

/// Possible CPUs; the loader overwrites it before verification.
#[unsafe(no_mangle)]
static CPUS: u32 = 1;

/// Flows each CPU may insert into the shared flow table per second; the loader
/// overwrites it before verification.
#[unsafe(no_mangle)]
static FLOW_INSERT_BUDGET: u32 = DEFAULT_FLOW_INSERT_BUDGET;

/// An address family: its flow key and the maps that hold its flows and services.
pub trait Family {
    /// The 5-tuple, in packet byte order.
    type Key: Copy + 'static;
    /// [`fulcrum_common::FlowEvent::family`] of its flows.
    const EVENT_FAMILY: u32;
    fn flows() -> &'static LruHashMap<Self::Key, FlowValue>;
    fn cache() -> &'static PerCpuArray<CachedFlowOf<Self::Key>>;
    /// Compares word by word (a derived comparison of arrays may call memcmp).
    fn same(a: &Self::Key, b: &Self::Key) -> bool;
    /// Copies field by field (a struct copy may compile to a byte-wise memmove call).
    ///
    /// # Safety
    /// `dst` is valid for writes.
    unsafe fn store(dst: *mut Self::Key, src: &Self::Key);
    /// The key as a flow event holds it.
    ///
    /// # Safety
    /// `dst` is valid for writes.
    unsafe fn store_event(dst: *mut FlowKey6, src: &Self::Key);
    fn cache_index(k: &Self::Key) -> u32;
    /// The Maglev hash every balancer agrees on.
    fn hash(k: &Self::Key, sticky: bool) -> u32;
    fn proto(k: &Self::Key) -> u8;
    /// The service of the key's destination, port and protocol.
    fn service(k: &Self::Key) -> Option<ServiceValue>;
    /// An address as the VIP maps key it.
    type Addr: 'static;
    /// The VIP entry of an address, if it is one.
    fn vip(addr: &Self::Addr) -> Option<*const VipInfo>;
}

/// IPv4.
pub struct V4;
/// IPv6.
pub struct V6;

impl Family for V4 {
    type Key = FlowKey;
    const EVENT_FAMILY: u32 = FLOW_FAMILY_IPV4;
    #[inline(always)]
    fn flows() -> &'static LruHashMap<FlowKey, FlowValue> {
        &FLOWS
    }
    #[inline(always)]
    fn cache() -> &'static PerCpuArray<CachedFlowOf<FlowKey>> {
        &FLOW_CACHE
    }
    #[inline(always)]
    fn same(a: &FlowKey, b: &FlowKey) -> bool {
        a == b
    }
    #[inline(always)]
    unsafe fn store(dst: *mut FlowKey, src: &FlowKey) {
        // SAFETY: the caller's.
        unsafe {
            (*dst).src = src.src;
            (*dst).dst = src.dst;
            (*dst).sport = src.sport;
            (*dst).dport = src.dport;
            (*dst).proto = src.proto;
            (*dst)._pad = 0;
            (*dst)._pad2 = 0;
        }
    }
    #[inline(always)]
    unsafe fn store_event(dst: *mut FlowKey6, src: &FlowKey) {
        // SAFETY: the caller's.
        unsafe {
            (*dst).src = [src.src, 0, 0, 0];
            (*dst).dst = [src.dst, 0, 0, 0];
            (*dst).sport = src.sport;
            (*dst).dport = src.dport;
            (*dst).proto = src.proto;
            (*dst)._pad = 0;
            (*dst)._pad2 = 0;
        }
    }
    #[inline(always)]
    fn cache_index(k: &FlowKey) -> u32 {
        flow_cache_index(k)
    }
    #[inline(always)]
    fn hash(k: &FlowKey, sticky: bool) -> u32 {
        flow_hash(k, sticky)
    }
    #[inline(always)]
    fn proto(k: &FlowKey) -> u8 {
        k.proto
    }
    #[inline(always)]
    fn service(k: &FlowKey) -> Option<ServiceValue> {
        choose::service4(k)
    }
    type Addr = u32;
    #[inline(always)]
    fn vip(addr: &u32) -> Option<*const VipInfo> {
        VIPS.get_ptr(addr)
    }
}

impl Family for V6 {
    type Key = FlowKey6;
    const EVENT_FAMILY: u32 = FLOW_FAMILY_IPV6;
    #[inline(always)]
    fn flows() -> &'static LruHashMap<FlowKey6, FlowValue> {
        &FLOWS6
    }
    #[inline(always)]
    fn cache() -> &'static PerCpuArray<CachedFlowOf<FlowKey6>> {
        &FLOW_CACHE6
    }
    #[inline(always)]
    fn same(a: &FlowKey6, b: &FlowKey6) -> bool {
        a.src[0] == b.src[0]
            && a.src[1] == b.src[1]
            && a.src[2] == b.src[2]
            && a.src[3] == b.src[3]
            && a.dst[0] == b.dst[0]
            && a.dst[1] == b.dst[1]
            && a.dst[2] == b.dst[2]
            && a.dst[3] == b.dst[3]
            && a.sport == b.sport
            && a.dport == b.dport
            && a.proto == b.proto
    }
    #[inline(always)]
    unsafe fn store(dst: *mut FlowKey6, src: &FlowKey6) {
        // SAFETY: the caller's.
        unsafe { store6(dst, src) }
    }
    #[inline(always)]
    unsafe fn store_event(dst: *mut FlowKey6, src: &FlowKey6) {
        // SAFETY: the caller's.
        unsafe { store6(dst, src) }
    }
    #[inline(always)]
    fn cache_index(k: &FlowKey6) -> u32 {
        flow_cache_index6(k)
    }
    #[inline(always)]
    fn hash(k: &FlowKey6, sticky: bool) -> u32 {
        flow_hash6(k, sticky)
    }
    #[inline(always)]
    fn proto(k: &FlowKey6) -> u8 {
        k.proto
    }
    #[inline(always)]
    fn service(k: &FlowKey6) -> Option<ServiceValue> {
        choose::service6(k)
    }
    type Addr = [u32; 4];
    #[inline(always)]
    fn vip(addr: &[u32; 4]) -> Option<*const VipInfo> {
        VIPS6.get_ptr(addr)
    }
}

/// # Safety
/// `dst` is valid for writes.
#[inline(always)]
unsafe fn store6(dst: *mut FlowKey6, src: &FlowKey6) {
    // SAFETY: the caller's.
    unsafe {
        (*dst).src[0] = src.src[0];
        (*dst).src[1] = src.src[1];
        (*dst).src[2] = src.src[2];
        (*dst).src[3] = src.src[3];
        (*dst).dst[0] = src.dst[0];
        (*dst).dst[1] = src.dst[1];
        (*dst).dst[2] = src.dst[2];
        (*dst).dst[3] = src.dst[3];
        (*dst).sport = src.sport;
        (*dst).dport = src.dport;
        (*dst).proto = src.proto;
        (*dst)._pad = 0;
        (*dst)._pad2 = 0;
    }
}

/// Where a packet goes: its backend slot and the backend's forwarding data.
pub struct Chosen {
    pub backend_slot: u32,
    /// The slot's entry in `BACKENDS` (array values stay put; read, never copied whole).
    pub backend: *const BackendValue,
    pub reason: Counter,
}

/// A flow's place in this CPU's cache and the shared epochs.
pub struct Slot<F: Family> {
    pub index: u32,
    pub cache: Option<*mut CachedFlowOf<F::Key>>,
    pub epoch: Option<*mut u64>,
}

impl<F: Family> Slot<F> {
    #[inline(always)]
    pub fn of(flow: &F::Key) -> Self {
        // SAFETY: a plain read of a global the loader sets before verification.
        let mask = unsafe { core::ptr::read_volatile(&FLOW_CACHE_MASK) };
        let index = F::cache_index(flow) & mask;
        Self {
            index,
            cache: F::cache().get_ptr_mut(index),
            epoch: FLOW_EPOCH.get_ptr_mut(index),
        }
    }
}

pub enum Pinned {
    Hit(Chosen),
    /// Pinned to a backend that has since been removed, or to a slot not usable now.
    Stale,
    Miss,
}

/// This CPU's cached entry for the flow, else the flow table's, if its backend is still
/// the one it was pinned to. A cached entry stored before the last SYN of its index may
/// be an older connection's on the same 5-tuple: then the flow table says.
#[inline(always)]
pub fn pinned<F: Family>(flow: &F::Key, slot: &Slot<F>) -> Pinned {
    let now = read_epoch(slot.epoch);
    if let Some(c) = slot.cache {
        // SAFETY: this CPU's own entry; nothing else writes it while the program runs.
        let c = unsafe { &mut *c };
        if F::same(&c.key, flow)
            && c.epoch == now
            && let Pinned::Hit(chosen) = validate(&c.value)
        {
            if c.pending != 0 {
                // A further packet: the flow earns its place in the shared table (over
                // budget, it keeps waiting here).
                if admit::<F>(flow, c.value) {
                    c.pending = 0;
                }
            } else {
                c.hits = c.hits.wrapping_add(1);
                if c.hits & (FLOW_TOUCH_EVERY - 1) == 0 {
                    let _ = F::flows().get_ptr(flow);
                }
            }
            return Pinned::Hit(chosen);
        }
    }
    let Some(entry) = F::flows().get_ptr(flow) else {
        return Pinned::Miss;
    };
    // SAFETY: an entry of the flow table, see read_flow.
    let entry = unsafe { read_flow(entry) };
    let found = validate(&entry);
    if let (Pinned::Hit(_), Some(c)) = (&found, slot.cache) {
        store::<F>(c, flow, entry, 0, now);
    }
    found
}

/// Most CPUs whose caches a further packet looks through; lookups past the last CPU fail.
const MAX_CPUS: u32 = 512;

/// The choice for this flow waiting in another CPU's cache (a SYN's, or an unproven
/// first packet's): a further packet that lands on another CPU (RPS, a migrating client)
/// must not be chosen anew, since the backend set may have changed meanwhile. Runs on a
/// miss; the flow is proven and pinned, within this CPU's budget.
#[inline(always)]
pub fn pending_elsewhere<F: Family>(flow: &F::Key, slot: &Slot<F>) -> Option<Chosen> {
    let now = read_epoch(slot.epoch);
    let map = (F::cache() as *const PerCpuArray<CachedFlowOf<F::Key>>)
        .cast_mut()
        .cast::<c_void>();
    let key = (&raw const slot.index).cast::<c_void>();
    // SAFETY: a plain read of a global the loader sets before verification.
    let cpus = unsafe { core::ptr::read_volatile(&CPUS) }.min(MAX_CPUS);
    for cpu in 0..cpus {
        // SAFETY: a lookup in a per-CPU array by a valid key; NULL past the last CPU.
        let other =
            unsafe { bpf_map_lookup_percpu_elem(map, key, cpu) }.cast::<CachedFlowOf<F::Key>>();
        if other.is_null() {
            return None;
        }
        // SAFETY: another CPU's entry, read field by field; a torn read fails the key,
        // epoch or generation check.
        let (same, pending, value, stored) = unsafe {
            (
                F::same(&(*other).key, flow),
                (*other).pending,
                (*other).value,
                (*other).epoch,
            )
        };
        if same && pending != 0 && stored == now {
            let Pinned::Hit(chosen) = validate(&value) else {
                return None;
            };
            let pending = u16::from(!admit::<F>(flow, value));
            if let Some(c) = slot.cache {
                store::<F>(c, flow, value, pending, now);
            }
            return Some(chosen);
        }
    }
    None
}

/// The epoch of a flow cache index (see `CachedFlow::epoch`).
#[inline(always)]
pub fn read_epoch(epoch: Option<*mut u64>) -> u32 {
    // SAFETY: an aligned array element, read in one load; SYNs on other CPUs bump it with
    // atomic adds. The cache keeps its low 32 bits: only 2^32 SYNs of one index between
    // two packets of a flow could make an entry pass for current.
    epoch.map_or(0, |e| unsafe { core::ptr::read_volatile(e) } as u32)
}

/// A flow table value in one 8-byte load: a SYN on another CPU may rewrite it meanwhile,
/// and a torn value could pass for a pin to another backend.
///
/// # Safety
/// `v` is an entry of the flow table (hash map values are 8-byte aligned).
#[inline(always)]
unsafe fn read_flow(v: *const FlowValue) -> FlowValue {
    // SAFETY: see above; FlowValue is two u32s, any bits are valid.
    unsafe { core::mem::transmute::<u64, FlowValue>(core::ptr::read_volatile(v.cast::<u64>())) }
}

/// How a fresh choice came about, which decides where it is kept.
#[derive(Clone, Copy)]
pub enum Fresh {
    /// A SYN: it takes its 5-tuple over (see [`take_over`]).
    Syn,
    /// Another first packet of a 5-tuple the table does not hold: unproven, it waits in
    /// this CPU's cache for a further packet (a spoofed flood never reaches the table).
    Miss,
    /// The table's entry names a backend no longer there: rewritten in place.
    Stale,
}

/// Keeps a fresh choice: in this CPU's cache, and in the flow table only where the
/// table already holds the 5-tuple (see `CachedFlow`); otherwise it is pending.
#[inline(always)]
pub fn pin<F: Family>(flow: &F::Key, fresh: Fresh, entry: FlowValue, slot: &Slot<F>) {
    let (pending, now) = match fresh {
        Fresh::Syn => take_over::<F>(flow, entry, slot.epoch),
        Fresh::Stale => (
            u16::from(!rewrite::<F>(flow, entry)),
            read_epoch(slot.epoch),
        ),
        Fresh::Miss => (1, read_epoch(slot.epoch)),
    };
    if let Some(c) = slot.cache {
        store::<F>(c, flow, entry, pending, now);
    }
}

/// Inserts a proven flow into the shared table if this CPU's budget for the current
/// second allows; counts it either way. A full LRU evicts its oldest flow, which is why
/// inserts are bounded; a failed insert only costs a re-hash next packet.
#[inline(always)]
fn admit<F: Family>(flow: &F::Key, value: FlowValue) -> bool {
    let Some(b) = FLOW_INSERTS.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a plain read of a global the loader sets before verification.
    let budget = u64::from(unsafe { core::ptr::read_volatile(&FLOW_INSERT_BUDGET) });
    // SAFETY: a helper without arguments.
    let second = unsafe { bpf_ktime_get_ns() } / 1_000_000_000;
    // SAFETY: per-CPU value, only this CPU writes it while the program runs.
    unsafe {
        if (*b).second != second {
            (*b).second = second;
            (*b).this_second = 0;
        }
        if (*b).this_second >= budget {
            (*b).over_budget += 1;
            return false;
        }
        (*b).this_second += 1;
        (*b).pinned += 1;
    }
    let _ = F::flows().insert(flow, value, 0);
    flow_events::written::<F>(flow, value);
    true
}

/// Rewrites the table's entry for the 5-tuple in place, if it holds one: an update that
/// allocates nothing, so it evicts nothing. Returns whether it did.
#[inline(always)]
fn rewrite<F: Family>(flow: &F::Key, entry: FlowValue) -> bool {
    let Some(old) = F::flows().get_ptr_mut(flow) else {
        return false;
    };
    // SAFETY: an entry of the flow table; one aligned 8-byte store, so a reader sees the
    // old value or the new one (see read_flow).
    unsafe {
        if read_flow(old) != entry {
            let bits = core::mem::transmute::<FlowValue, u64>(entry);
            core::ptr::write_volatile(old.cast::<u64>(), bits);
            flow_events::written::<F>(flow, entry);
        }
    }
    true
}

/// A SYN takes its 5-tuple over from any older connection on it: an entry the flow table
/// holds for the 5-tuple is rewritten in place (never created: spoofed SYNs for new
/// 5-tuples write nothing there), then the index's epoch moves on, so every CPU's cached
/// copy of the older connection is checked against the table again. Returns whether the
/// choice still waits for the flow's next packet to be pinned, and the epoch to cache it
/// under.
#[inline(always)]
fn take_over<F: Family>(flow: &F::Key, entry: FlowValue, epoch: Option<*mut u64>) -> (u16, u32) {
    let pending = u16::from(!rewrite::<F>(flow, entry));
    if let Some(e) = epoch {
        // SAFETY: an array element shared by all CPUs, only ever changed atomically.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(e, 1) };
    }
    (pending, read_epoch(epoch))
}

/// Remembers a flow in this CPU's cache, field by field (see [`Family::store`]).
#[inline(always)]
fn store<F: Family>(
    c: *mut CachedFlowOf<F::Key>,
    flow: &F::Key,
    value: FlowValue,
    pending: u16,
    epoch: u32,
) {
    // SAFETY: this CPU's own entry; nothing else writes it while the program runs.
    unsafe {
        F::store(&raw mut (*c).key, flow);
        (*c).value = value;
        (*c).hits = 0;
        (*c).pending = pending;
        (*c).epoch = epoch;
    }
}

/// Hit while the entry's backend slot still holds the backend it was pinned to and that
/// backend is usable: a slot being freed reads `{ifindex 0, generation + 1}`, and a flow
/// pinned in that instant must be chosen again, not dropped until the slot is reused.
#[inline(always)]
fn validate(entry: &FlowValue) -> Pinned {
    match BACKENDS.get_ptr(entry.backend) {
        // SAFETY: an array value; plain data, a concurrent update yields old or new fields.
        Some(b) if unsafe { (*b).generation == entry.generation && (*b).ifindex != 0 } => {
            Pinned::Hit(Chosen {
                backend_slot: entry.backend,
                backend: b,
                reason: Counter::FlowHit,
            })
        }
        _ => Pinned::Stale,
    }
}
