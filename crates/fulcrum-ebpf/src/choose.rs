//! Backend choice: the service of a VIP's port, then its Maglev table.

use fulcrum_common::{
    Counter, DEFAULT_RING_SIZE, FlowKey, FlowKey6, FlowValue, NO_BACKEND, SERVICE_F_STICKY,
    ServiceKey, ServiceKey6, ServiceValue, ring_stride,
};

use crate::{
    flow::{Chosen, Family, Fresh, Slot, pin},
    maps::{BACKENDS, MAGLEV, SERVICES, SERVICES6},
    verdict::Verdict,
};

/// Maglev table size; the loader overwrites it before verification.
#[unsafe(no_mangle)]
static RING_SIZE: u32 = DEFAULT_RING_SIZE;

/// The service for this exact port, else the VIP's every-port service.
#[inline(always)]
pub fn service4(flow: &FlowKey) -> Option<ServiceValue> {
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

/// [`service4`] for an IPv6 VIP.
#[inline(always)]
pub fn service6(flow: &FlowKey6) -> Option<ServiceValue> {
    let mut key = ServiceKey6 {
        vip: flow.dst,
        port: flow.dport,
        proto: flow.proto,
        _pad: 0,
    };
    if let Some(v) = SERVICES6.get_ptr(key) {
        // SAFETY: as in service4.
        return Some(unsafe { *v });
    }
    key.port = 0;
    SERVICES6.get_ptr(key).map(|v| unsafe { *v })
}

/// A fresh Maglev choice for the flow, kept as [`pin`] says.
#[inline(always)]
pub fn choose<F: Family>(
    flow: &F::Key,
    fresh: Fresh,
    service: &ServiceValue,
    slot: &Slot<F>,
    reason: Counter,
) -> Result<Chosen, Verdict> {
    let (chosen, entry) = maglev::<F>(flow, service, reason)?;
    pin::<F>(flow, fresh, entry, slot);
    Ok(chosen)
}

/// The Maglev choice for the flow and the flow table entry that would pin it, pinning
/// nothing (ICMP errors about a flow use it too).
#[inline(always)]
pub fn maglev<F: Family>(
    flow: &F::Key,
    service: &ServiceValue,
    reason: Counter,
) -> Result<(Chosen, FlowValue), Verdict> {
    // SAFETY: a plain read of a global the loader sets before verification.
    let ring = unsafe { core::ptr::read_volatile(&RING_SIZE) };
    if ring == 0 {
        return Err(Verdict::Drop(Counter::DropNoBackend));
    }
    let hash = F::hash(flow, service.flags & SERVICE_F_STICKY != 0);
    let index = service.slot * ring_stride(ring) + hash % ring;
    let pair = MAGLEV.get(index / 2).copied().unwrap_or(0);
    let backend_slot = (pair >> ((index & 1) * 32)) as u32;
    if backend_slot == NO_BACKEND {
        return Err(Verdict::Drop(Counter::DropNoBackend));
    }
    let backend = BACKENDS
        .get_ptr(backend_slot)
        .ok_or(Verdict::Drop(Counter::DropNoBackend))?;
    // SAFETY: an array value; plain data.
    let (ifindex, generation) = unsafe { ((*backend).ifindex, (*backend).generation) };
    // The table may still name a slot that user space is freeing: never pin it.
    if ifindex == 0 {
        return Err(Verdict::Drop(Counter::DropBackendUnresolved));
    }
    let entry = FlowValue {
        backend: backend_slot,
        generation,
    };
    Ok((
        Chosen {
            backend_slot,
            backend,
            reason,
        },
        entry,
    ))
}
