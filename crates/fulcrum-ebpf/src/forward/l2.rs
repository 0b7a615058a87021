//! Layer-2 DSR: the frame keeps its IP packet; only the MACs change (and the VLAN tag by
//! the rule in [`super::vlan`]).

use aya_ebpf::programs::XdpContext;
use fulcrum_common::{BackendValue, Counter};
use fulcrum_ebpf::header::{Macs, ptr_at};

use super::{transmit, vlan};
use crate::verdict::Verdict;

/// Retags if the backend says so, rewrites both MACs and sends the frame on its way.
#[inline(always)]
pub fn send(ctx: &XdpContext, b: &BackendValue, reason: Counter) -> Verdict {
    if let Err(v) = vlan::apply(ctx, b) {
        return v;
    }
    let Some(macs) = ptr_at::<Macs>(ctx, 0) else {
        return Verdict::Drop(Counter::DropBadIpHeader);
    };
    // SAFETY: bounds checked by ptr_at; `mac` then `src_mac` are the 12 bytes of an
    // Ethernet header's two addresses, at offset 0 of a 4-aligned value.
    unsafe { *macs = *(&raw const b.mac).cast::<Macs>() };
    transmit(ctx, b, reason)
}
