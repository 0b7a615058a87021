//! Fulcrum's XDP program: steer packets for virtual services to backends (L2 DSR).
//!
//! Rules, in the order they apply (each is a counter, see `fulcrum_common::Counter`):
//! what cannot be VIP traffic (short frames, non-IPv4, unreadable IPv4 headers, other
//! destinations) passes to the kernel untouched; VIP traffic that is malformed or
//! unsupported (bad header, length beyond the frame, fragments, options, a TCP/UDP header
//! cut short, a TCP data offset below 5, a UDP length below 8) is dropped; VIP traffic
//! with no service for its port passes; a service with no usable backend drops; everything
//! else is forwarded to a usable backend. `crates/fulcrum-lab/tests/fuzz` holds the
//! program to these rules.
#![no_std]
#![no_main]
// BPF without ALU32 has 64-bit atomic adds but no `AtomicU64::fetch_add`; the intrinsic
// compiles to one `lock xadd` (BPF_ATOMIC | BPF_ADD).
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::{
    intrinsics::{AtomicOrdering, atomic_xadd},
    mem::size_of,
};

mod flow_events;
mod maps;

use aya_ebpf::{
    bindings::xdp_action, cty::c_void, helpers::bpf_map_lookup_percpu_elem, macros::xdp,
    programs::XdpContext,
};
use fulcrum_common::{
    BackendValue, CachedFlow, Counter, DEFAULT_FLOW_CACHE, DEFAULT_RING_SIZE, FLOW_TOUCH_EVERY,
    FlowKey, FlowValue, IPPROTO_TCP, IPPROTO_UDP, NO_BACKEND, SERVICE_F_STICKY, ServiceKey,
    ServiceValue, TrafficCounters, flow_cache_index, flow_hash, ring_stride, vip_filter_bucket,
};
use fulcrum_ebpf::header::{
    ETH_P_8021Q, ETH_P_IP, Eth, IPV4_MF_AND_OFFSET, Ipv4, Macs, TCP_ACK, TCP_SYN, Tcp, Udp, Vlan,
    frame_len, ptr_at,
};
use maps::{
    BACKEND_STATS, BACKENDS, EGRESS, FLOW_CACHE, FLOW_EPOCH, FLOWS, GLOBAL_STATS, MAGLEV, SERVICES,
    VIP_FILTER, VIPS,
};

/// Maglev table size; the loader overwrites it before verification.
#[unsafe(no_mangle)]
static RING_SIZE: u32 = DEFAULT_RING_SIZE;

/// Possible CPUs; the loader overwrites it before verification.
#[unsafe(no_mangle)]
static CPUS: u32 = 1;

/// Flow cache entries − 1; the loader overwrites it before verification.
#[unsafe(no_mangle)]
static FLOW_CACHE_MASK: u32 = DEFAULT_FLOW_CACHE - 1;

/// What to do with a packet and why; every packet counts both.
#[derive(Clone, Copy)]
enum Verdict {
    Tx(Counter),
    Redirect(Counter),
    Pass(Counter),
    Drop(Counter),
}

#[xdp]
pub fn fulcrum(ctx: XdpContext) -> u32 {
    let (action, counter, reason) = match balance(&ctx) {
        Verdict::Tx(r) => (xdp_action::XDP_TX, Counter::Tx, r),
        Verdict::Redirect(r) => (xdp_action::XDP_REDIRECT, Counter::Redirect, r),
        Verdict::Pass(r) => (xdp_action::XDP_PASS, Counter::Pass, r),
        Verdict::Drop(r) => (xdp_action::XDP_DROP, Counter::Drop, r),
    };
    if let Some(stats) = GLOBAL_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        let counts = unsafe { &mut (*stats).counts };
        if let Some(c) = counts.get_mut(counter as usize) {
            *c += 1;
        }
        if let Some(c) = counts.get_mut(reason as usize) {
            *c += 1;
        }
    }
    action
}

/// Lets a veth accept frames its peer sends with `XDP_TX` (labs put it on the far end).
#[xdp]
pub fn fulcrum_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The 5-tuple and what the balancer needs to know of the L4 header.
struct Parsed {
    flow: FlowKey,
    /// TCP SYN without ACK: a connection being opened.
    syn: bool,
}

/// Where a packet goes: its backend slot and the backend's forwarding data.
struct Chosen {
    backend_slot: u32,
    backend: BackendValue,
    reason: Counter,
}

#[inline(always)]
fn balance(ctx: &XdpContext) -> Verdict {
    let (ip, l3) = match ip_header(ctx) {
        Ok(found) => found,
        Err(v) => return v,
    };
    // SAFETY: bounds checked by ip_header.
    let dst = unsafe { (*ip).dst };
    let may_be_vip = VIP_FILTER
        .get(vip_filter_bucket(dst))
        .is_some_and(|n| *n != 0);
    if !may_be_vip {
        return Verdict::Pass(Counter::PassNotVip);
    }
    let parsed = match parse_l4(ctx, ip, l3) {
        Ok(p) => p,
        Err(v) => return confirm_vip(dst, v),
    };
    // SAFETY: a plain read of a global the loader sets before verification.
    let mask = unsafe { core::ptr::read_volatile(&FLOW_CACHE_MASK) };
    let index = flow_cache_index(&parsed.flow) & mask;
    let cache = FLOW_CACHE.get_ptr_mut(index);
    let epoch = FLOW_EPOCH.get_ptr_mut(index);
    // Established flows: this CPU's cache, else the flow table; no service lookup.
    let mut reason = if parsed.syn {
        Counter::FlowNewSyn
    } else if parsed.flow.proto == IPPROTO_UDP {
        Counter::FlowNewUdp
    } else {
        Counter::FlowMissNonSyn
    };
    if !parsed.syn {
        match pinned(&parsed.flow, cache, epoch) {
            Pinned::Hit(chosen) => return forward(ctx, chosen),
            Pinned::Stale => reason = Counter::FlowStale,
            Pinned::Miss if parsed.flow.proto == IPPROTO_TCP => {
                if let Some(chosen) = pending_elsewhere(&parsed.flow, index, cache, epoch) {
                    return forward(ctx, chosen);
                }
            }
            Pinned::Miss => {}
        }
    }
    let Some(service) = find_service(&parsed.flow) else {
        return confirm_vip(dst, Verdict::Pass(Counter::PassNoService));
    };
    match choose(&parsed, &service, cache, epoch, reason) {
        Ok(chosen) => forward(ctx, chosen),
        Err(v) => v,
    }
}

/// A verdict reached for a packet whose address bucket holds a VIP: only packets for a
/// VIP keep it, others pass untouched.
#[inline(always)]
fn confirm_vip(dst: u32, verdict: Verdict) -> Verdict {
    if VIPS.get_ptr(dst).is_none() {
        return Verdict::Pass(Counter::PassNotVip);
    }
    verdict
}

/// Rewrites the MACs, counts, and sends the frame on its way.
#[inline(always)]
fn forward(ctx: &XdpContext, chosen: Chosen) -> Verdict {
    let backend = chosen.backend;
    let len = frame_len(ctx) as u64;
    let new_flow = !matches!(chosen.reason, Counter::FlowHit) as u64;
    count_traffic(
        BACKEND_STATS.get_ptr_mut(chosen.backend_slot),
        len,
        new_flow,
    );

    let Some(macs) = ptr_at::<Macs>(ctx, 0) else {
        return Verdict::Drop(Counter::DropBadIpHeader);
    };
    // SAFETY: bounds checked by ptr_at; `mac` then `src_mac` are the 12 bytes of an
    // Ethernet header's two addresses, at offset 0 of a 4-aligned value.
    unsafe { *macs = *(&raw const backend.mac).cast::<Macs>() };
    if backend.ifindex == ctx.ingress_ifindex() as u32 {
        return Verdict::Tx(chosen.reason);
    }
    match EGRESS.redirect(backend.ifindex, 0) {
        Ok(_) => Verdict::Redirect(chosen.reason),
        Err(_) => Verdict::Drop(Counter::DropRedirect),
    }
}

/// Ethernet (one optional 802.1Q tag) and the fixed IPv4 header; anything else passes.
#[inline(always)]
fn ip_header(ctx: &XdpContext) -> Result<(*const Ipv4, usize), Verdict> {
    let eth = ptr_at::<Eth>(ctx, 0).ok_or(Verdict::Pass(Counter::PassMalformedL2))?;
    // SAFETY (header reads): bounds checked by ptr_at.
    let mut ether_type = unsafe { (*eth).ether_type };
    let mut l3 = size_of::<Eth>();
    if ether_type == ETH_P_8021Q.to_be() {
        let vlan = ptr_at::<Vlan>(ctx, l3).ok_or(Verdict::Pass(Counter::PassMalformedL2))?;
        ether_type = unsafe { (*vlan).ether_type };
        l3 += size_of::<Vlan>();
    }
    if ether_type != ETH_P_IP.to_be() {
        return Err(Verdict::Pass(Counter::PassNotIpv4));
    }
    let ip = ptr_at::<Ipv4>(ctx, l3).ok_or(Verdict::Pass(Counter::PassMalformedIp))?;
    Ok((ip, l3))
}

/// Checks the IPv4 header of (probable) VIP traffic and reads TCP/UDP, in the documented
/// order: anything odd is dropped, never forwarded.
#[inline(always)]
fn parse_l4(ctx: &XdpContext, ip: *const Ipv4, l3: usize) -> Result<Parsed, Verdict> {
    // SAFETY (header reads): bounds checked by ip_header and ptr_at.
    let ip = unsafe { &*ip };
    const IP_HLEN: usize = size_of::<Ipv4>();
    let version = ip.version_ihl >> 4;
    let ihl = ((ip.version_ihl & 0x0f) as usize) * 4;
    let total_len = u16::from_be(ip.total_len) as usize;
    if version != 4 || ihl < IP_HLEN || total_len < ihl {
        return Err(Verdict::Drop(Counter::DropBadIpHeader));
    }
    if l3 + total_len > frame_len(ctx) {
        return Err(Verdict::Drop(Counter::DropIpLength));
    }
    if u16::from_be(ip.frag) & IPV4_MF_AND_OFFSET != 0 {
        return Err(Verdict::Drop(Counter::DropFragment));
    }
    if ihl != IP_HLEN {
        return Err(Verdict::Drop(Counter::DropIpOptions));
    }

    let l4 = l3 + IP_HLEN;
    let truncated = Verdict::Drop(Counter::DropTruncatedL4);
    let (sport, dport, syn) = match ip.proto {
        IPPROTO_TCP => {
            if total_len < IP_HLEN + size_of::<Tcp>() {
                return Err(truncated);
            }
            let tcp = ptr_at::<Tcp>(ctx, l4).ok_or(truncated)?;
            let tcp = unsafe { &*tcp };
            let data_offset = ((tcp.data_offset >> 4) as usize) * 4;
            if data_offset < size_of::<Tcp>() {
                return Err(Verdict::Drop(Counter::DropBadL4Header));
            }
            if data_offset > total_len - IP_HLEN {
                return Err(truncated);
            }
            (
                tcp.sport,
                tcp.dport,
                tcp.flags & (TCP_SYN | TCP_ACK) == TCP_SYN,
            )
        }
        IPPROTO_UDP => {
            if total_len < IP_HLEN + size_of::<Udp>() {
                return Err(truncated);
            }
            let udp = ptr_at::<Udp>(ctx, l4).ok_or(truncated)?;
            let udp = unsafe { &*udp };
            let udp_len = u16::from_be(udp.len) as usize;
            if udp_len < size_of::<Udp>() {
                return Err(Verdict::Drop(Counter::DropBadL4Header));
            }
            if udp_len > total_len - IP_HLEN {
                return Err(truncated);
            }
            (udp.sport, udp.dport, false)
        }
        _ => return Err(Verdict::Pass(Counter::PassNoService)),
    };
    Ok(Parsed {
        flow: FlowKey {
            src: ip.src,
            dst: ip.dst,
            sport,
            dport,
            proto: ip.proto,
            _pad: 0,
            _pad2: 0,
        },
        syn,
    })
}

/// The service for this exact port, else the VIP's every-port service.
#[inline(always)]
fn find_service(flow: &FlowKey) -> Option<ServiceValue> {
    let mut key = ServiceKey {
        vip: flow.dst,
        port: flow.dport,
        proto: flow.proto,
        _pad: 0,
    };
    if let Some(v) = SERVICES.get_ptr(key) {
        // SAFETY: map values are plain data; a concurrent update yields old or new.
        return Some(unsafe { *v });
    }
    key.port = 0;
    SERVICES.get_ptr(key).map(|v| unsafe { *v })
}

enum Pinned {
    Hit(Chosen),
    /// Pinned to a backend that has since been removed, or to a slot not usable now.
    Stale,
    Miss,
}

/// This CPU's cached entry for the flow, else the flow table's, if its backend is still
/// the one it was pinned to. A cached entry stored before the last SYN of its index may
/// be an older connection's on the same 5-tuple: then the flow table says.
#[inline(always)]
fn pinned(flow: &FlowKey, cache: Option<*mut CachedFlow>, epoch: Option<*mut u64>) -> Pinned {
    let now = read_epoch(epoch);
    if let Some(c) = cache {
        // SAFETY: this CPU's own entry; nothing else writes it while the program runs.
        let c = unsafe { &mut *c };
        if c.key == *flow
            && c.epoch == now
            && let Pinned::Hit(chosen) = validate(&c.value)
        {
            if c.pending != 0 {
                // The handshake goes on: the flow earns its place in the shared table.
                let _ = FLOWS.insert(flow, c.value, 0);
                flow_events::written(flow, c.value);
                c.pending = 0;
            } else {
                c.hits = c.hits.wrapping_add(1);
                if c.hits & (FLOW_TOUCH_EVERY - 1) == 0 {
                    let _ = FLOWS.get_ptr(flow);
                }
            }
            return Pinned::Hit(chosen);
        }
    }
    let Some(entry) = FLOWS.get_ptr(flow) else {
        return Pinned::Miss;
    };
    // SAFETY: an entry of the flow table, see read_flow.
    let entry = unsafe { read_flow(entry) };
    let found = validate(&entry);
    if let (Pinned::Hit(_), Some(c)) = (&found, cache) {
        cache_store(c, flow, entry, 0, now);
    }
    found
}

/// Most CPUs whose caches a handshake ACK looks through; lookups past the last CPU fail.
const MAX_CPUS: u32 = 512;

/// The SYN's choice for this flow, waiting in another CPU's cache: a handshake ACK that
/// lands on another CPU than its SYN (RPS, a migrating client) must not be chosen anew,
/// since the backend set may have changed since the SYN. Runs only on a TCP miss.
#[inline(always)]
fn pending_elsewhere(
    flow: &FlowKey,
    index: u32,
    cache: Option<*mut CachedFlow>,
    epoch: Option<*mut u64>,
) -> Option<Chosen> {
    let now = read_epoch(epoch);
    let map = (&raw const FLOW_CACHE).cast_mut().cast::<c_void>();
    let key = (&raw const index).cast::<c_void>();
    // SAFETY: a plain read of a global the loader sets before verification.
    let cpus = unsafe { core::ptr::read_volatile(&CPUS) }.min(MAX_CPUS);
    for cpu in 0..cpus {
        // SAFETY: a lookup in a per-CPU array by a valid key; NULL past the last CPU.
        let other = unsafe { bpf_map_lookup_percpu_elem(map, key, cpu) }.cast::<CachedFlow>();
        if other.is_null() {
            return None;
        }
        // SAFETY: another CPU's entry, read field by field; a torn read fails the key,
        // epoch or generation check.
        let (same, pending, value, stored) = unsafe {
            (
                (*other).key == *flow,
                (*other).pending,
                (*other).value,
                (*other).epoch,
            )
        };
        if same && pending != 0 && stored == now {
            let Pinned::Hit(chosen) = validate(&value) else {
                return None;
            };
            let _ = FLOWS.insert(flow, value, 0);
            flow_events::written(flow, value);
            if let Some(c) = cache {
                cache_store(c, flow, value, 0, now);
            }
            return Some(chosen);
        }
    }
    None
}

/// The epoch of a flow cache index (see `CachedFlow::epoch`).
#[inline(always)]
fn read_epoch(epoch: Option<*mut u64>) -> u32 {
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

/// A SYN takes its 5-tuple over from any older connection on it: an entry the flow table
/// holds for the 5-tuple is rewritten in place (never created: spoofed SYNs for new
/// 5-tuples write nothing there), then the index's epoch moves on, so every CPU's cached
/// copy of the older connection is checked against the table again. Returns whether the
/// choice still waits for the flow's next packet to be pinned, and the epoch to cache it
/// under.
#[inline(always)]
fn take_over(flow: &FlowKey, entry: FlowValue, epoch: Option<*mut u64>) -> (u16, u32) {
    let pending = match FLOWS.get_ptr_mut(flow) {
        Some(old) => {
            // SAFETY: an entry of the flow table; one aligned 8-byte store, so a reader
            // sees the old value or the new one (see read_flow).
            unsafe {
                if read_flow(old) != entry {
                    let bits = core::mem::transmute::<FlowValue, u64>(entry);
                    core::ptr::write_volatile(old.cast::<u64>(), bits);
                    flow_events::written(flow, entry);
                }
            }
            0
        }
        None => 1,
    };
    if let Some(e) = epoch {
        // SAFETY: an array element shared by all CPUs, only ever changed atomically.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(e, 1) };
    }
    (pending, read_epoch(epoch))
}

/// Remembers a flow in this CPU's cache, field by field: a struct copy here compiles to
/// a call of a byte-wise memmove.
#[inline(always)]
fn cache_store(c: *mut CachedFlow, flow: &FlowKey, value: FlowValue, pending: u16, epoch: u32) {
    // SAFETY: this CPU's own entry; nothing else writes it while the program runs.
    unsafe {
        (*c).key.src = flow.src;
        (*c).key.dst = flow.dst;
        (*c).key.sport = flow.sport;
        (*c).key.dport = flow.dport;
        (*c).key.proto = flow.proto;
        (*c).key._pad = 0;
        (*c).key._pad2 = 0;
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
    match BACKENDS.get(entry.backend) {
        Some(b) if b.generation == entry.generation && b.ifindex != 0 => Pinned::Hit(Chosen {
            backend_slot: entry.backend,
            backend: *b,
            reason: Counter::FlowHit,
        }),
        _ => Pinned::Stale,
    }
}

/// A fresh Maglev choice, pinned in this CPU's cache, and in the flow table unless it is
/// a SYN's for a 5-tuple the table does not hold (see `CachedFlow`).
#[inline(always)]
fn choose(
    parsed: &Parsed,
    service: &ServiceValue,
    cache: Option<*mut CachedFlow>,
    epoch: Option<*mut u64>,
    reason: Counter,
) -> Result<Chosen, Verdict> {
    let flow = &parsed.flow;
    // SAFETY: a plain read of a global the loader sets before verification.
    let ring = unsafe { core::ptr::read_volatile(&RING_SIZE) };
    if ring == 0 {
        return Err(Verdict::Drop(Counter::DropNoBackend));
    }
    let hash = flow_hash(flow, service.flags & SERVICE_F_STICKY != 0);
    let index = service.slot * ring_stride(ring) + hash % ring;
    let pair = MAGLEV.get(index / 2).copied().unwrap_or(0);
    let slot = (pair >> ((index & 1) * 32)) as u32;
    if slot == NO_BACKEND {
        return Err(Verdict::Drop(Counter::DropNoBackend));
    }
    let backend = *BACKENDS
        .get(slot)
        .ok_or(Verdict::Drop(Counter::DropNoBackend))?;
    // The table may still name a slot that user space is freeing: never pin it.
    if backend.ifindex == 0 {
        return Err(Verdict::Drop(Counter::DropBackendUnresolved));
    }
    let entry = FlowValue {
        backend: slot,
        generation: backend.generation,
    };
    let (pending, now) = if parsed.syn {
        take_over(flow, entry, epoch)
    } else {
        // A full LRU evicts the oldest flow; a failed insert only costs a re-hash next packet.
        let _ = FLOWS.insert(flow, entry, 0);
        flow_events::written(flow, entry);
        (0, read_epoch(epoch))
    };
    if let Some(c) = cache {
        cache_store(c, flow, entry, pending, now);
    }
    Ok(Chosen {
        backend_slot: slot,
        backend,
        reason,
    })
}

#[inline(always)]
fn count_traffic(counters: Option<*mut TrafficCounters>, bytes: u64, new_flow: u64) {
    if let Some(c) = counters {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            (*c).new_flows += new_flow;
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
