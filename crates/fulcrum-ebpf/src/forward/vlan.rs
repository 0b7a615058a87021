//! The 802.1Q rule: a backend with `BACKEND_V_VLAN` gets the frame tagged with its
//! `vlan` (the tag rewritten, or pushed if the frame came untagged); any other backend
//! gets the frame's tag as it came.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use fulcrum_common::{BACKEND_V_VLAN, BackendValue, Counter};
use fulcrum_ebpf::header::{ETH_P_8021Q, Vlan, adjust_head, ptr_at};

use crate::verdict::Verdict;

/// Offset of the EtherType in an Ethernet header (after the two MACs).
const ETHER_TYPE: usize = 12;

/// Applies the rule before the MACs are written. A pushed tag leaves the 12 MAC bytes
/// undefined (the caller writes both); `drop_encap` when the frame cannot grow.
///
/// The tag is found in the frame again rather than taken from the parse: the verifier
/// then walks the forwarding code once, not once per tagged and untagged offset.
#[inline(always)]
pub fn apply(ctx: &XdpContext, b: &BackendValue) -> Result<(), Verdict> {
    if b.flags & BACKEND_V_VLAN == 0 {
        return Ok(());
    }
    let bad = Verdict::Drop(Counter::DropEncap);
    let tag = ptr_at::<[u16; 2]>(ctx, ETHER_TYPE).ok_or(bad)?;
    // SAFETY: bounds checked by ptr_at.
    if unsafe { (*tag)[0] } == ETH_P_8021Q.to_be() {
        // SAFETY: as above.
        unsafe { (*tag)[1] = b.vlan };
        return Ok(());
    }
    // The old EtherType ends up right after the new tag: only the TPID and TCI are new.
    adjust_head(ctx, -(size_of::<Vlan>() as i32)).map_err(|_| bad)?;
    let tag = ptr_at::<[u16; 2]>(ctx, ETHER_TYPE).ok_or(bad)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe { *tag = [ETH_P_8021Q.to_be(), b.vlan] };
    Ok(())
}
