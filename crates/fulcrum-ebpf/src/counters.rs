//! The program's counters: one global action and reason per packet, traffic per backend.

use aya_ebpf::bindings::xdp_action;
use fulcrum_common::{Counter, TrafficCounters};

use crate::{
    maps::{BACKEND_STATS, GLOBAL_STATS},
    verdict::Verdict,
};

/// Counts the verdict's action and reason; returns the XDP action.
#[inline(always)]
pub fn finish(verdict: Verdict) -> u32 {
    let (action, counter, reason) = match verdict {
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

/// One forwarded packet of `bytes` for a backend slot; `new_flow` 1 when it was chosen.
/// Returns the backend's packets on this CPU so far (0 without an entry), which top
/// talkers samples by.
#[inline(always)]
pub fn traffic(slot: u32, bytes: u64, new_flow: u64) -> u64 {
    let counters: Option<*mut TrafficCounters> = BACKEND_STATS.get_ptr_mut(slot);
    let Some(c) = counters else {
        return 0;
    };
    // SAFETY: per-CPU value, only this CPU writes it while the program runs.
    unsafe {
        (*c).packets += 1;
        (*c).bytes += bytes;
        (*c).new_flows += new_flow;
        (*c).packets
    }
}
