//! Flow sharing's half in the data plane: every new or changed entry of a flow table
//! goes to a ring buffer that user space reads and shares with other balancers.
//!
//! Off (the default), the loader leaves `SHARE_FLOWS` zero and the verifier, which knows
//! the read-only global's value, removes the emission: no cost at all. On, a flow write
//! costs one ring reservation and one per-CPU counter.

use fulcrum_common::{FlowEvent, FlowValue};

use crate::{
    flow::Family,
    maps::{FLOW_EVENT_STATS, FLOW_EVENTS},
};

/// Non-zero while flow sharing is on; the loader sets it before verification.
#[unsafe(no_mangle)]
static SHARE_FLOWS: u32 = 0;

/// Tells user space the flow table now holds `value` for `flow`.
#[inline(always)]
pub fn written<F: Family>(flow: &F::Key, value: FlowValue) {
    // SAFETY: a plain read of a global the loader sets before verification.
    if unsafe { core::ptr::read_volatile(&SHARE_FLOWS) } == 0 {
        return;
    }
    let counters = FLOW_EVENT_STATS.get_ptr_mut(0);
    let Some(mut entry) = FLOW_EVENTS.reserve::<FlowEvent>(0) else {
        if let Some(c) = counters {
            // SAFETY: per-CPU value, only this CPU writes it while the program runs.
            unsafe { (*c).lost += 1 };
        }
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: the reservation holds a whole FlowEvent (8-aligned); written field by
    // field, since a struct copy compiles to a byte-wise memmove call.
    unsafe {
        F::store_event(&raw mut (*event).key, flow);
        (*event).value = value;
        (*event).family = F::EVENT_FAMILY;
        (*event)._pad = 0;
    }
    entry.submit(0);
    if let Some(c) = counters {
        // SAFETY: as above.
        unsafe { (*c).emitted += 1 };
    }
}
