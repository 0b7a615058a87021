//! Sending a packet to its backend, one module per forwarding mode.

pub mod l2;
pub mod vlan;

use aya_ebpf::programs::XdpContext;
use fulcrum_common::{BackendValue, Counter, FORWARD_GUE, FORWARD_IPIP, FORWARD_L2};

use crate::{parse::Packet, verdict::Verdict};

/// Whether `send` needs the flow's hash for this backend (tunnel modes: outer source and
/// GUE port), so the L2 path does not compute it.
#[inline(always)]
pub fn needs_hash(b: &BackendValue) -> bool {
    b.mode != FORWARD_L2
}

/// Sends the packet to backend `b` by its mode; `hash` is the flow's hash (0 when
/// [`needs_hash`] says it is not needed), `reason` the flow counter of the choice.
#[inline(always)]
pub fn send<K>(
    ctx: &XdpContext,
    pkt: &Packet<K>,
    b: &BackendValue,
    hash: u32,
    reason: Counter,
) -> Verdict {
    let _ = (pkt, hash);
    match b.mode {
        FORWARD_L2 => l2::send(ctx, b, reason),
        FORWARD_IPIP => Verdict::Drop(Counter::DropEncap),
        FORWARD_GUE => Verdict::Drop(Counter::DropEncap),
        _ => Verdict::Drop(Counter::DropEncap),
    }
}

/// Out of the interface the frame came in on, or redirected to the backend's.
#[inline(always)]
pub fn transmit(ctx: &XdpContext, b: &BackendValue, reason: Counter) -> Verdict {
    if b.ifindex == ctx.ingress_ifindex() as u32 {
        return Verdict::Tx(reason);
    }
    match crate::maps::EGRESS.redirect(b.ifindex, 0) {
        Ok(_) => Verdict::Redirect(reason),
        Err(_) => Verdict::Drop(Counter::DropRedirect),
    }
}
