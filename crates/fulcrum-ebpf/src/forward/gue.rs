//! GUE variant 1 ("direct", as Katran and Linux's fou send it): an outer IP header, a UDP
//! header to the backend's GUE port, then the inner IP header, for networks whose
//! routers spread flows only by UDP ports. The UDP source port comes from the flow hash
//! (one flow, one path); the UDP checksum is 0 over IPv4 and IPv6 (RFC 6935 allows it
//! for tunnels: the inner packet carries its own checksums).

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use fulcrum_common::{BackendValue, Counter, IPPROTO_UDP};
use fulcrum_ebpf::header::{Udp, ptr_at};

use super::{
    ipip::{self, Inner},
    too_big, transmit,
};
use crate::{parse::Packet, verdict::Verdict};

/// GUE to backend `b`, or the oversize rule's answer.
#[inline(always)]
pub fn send<K>(
    ctx: &XdpContext,
    pkt: &Packet<K>,
    b: &BackendValue,
    hash: u32,
    reason: Counter,
) -> Verdict {
    let inner = Inner::of(pkt);
    if let Some(v) = too_big::check(ctx, &inner, b.mtu, ipip::outer_ip_len(b) + UDP_LEN) {
        return v;
    }
    if encapsulate(ctx, &inner, b, hash).is_err() {
        return Verdict::Drop(Counter::DropEncap);
    }
    transmit(ctx, b, reason)
}

/// UDP header bytes.
pub const UDP_LEN: u16 = size_of::<Udp>() as u16;

/// The UDP source port of a flow: 32768 + 15 bits of its hash.
#[inline(always)]
pub fn source_port(hash: u32) -> u16 {
    0x8000 | (hash as u16 & 0x7fff)
}

/// Encapsulates in GUE; `Err` when the frame cannot grow (`drop_encap`).
#[inline(always)]
pub fn encapsulate(ctx: &XdpContext, inner: &Inner, b: &BackendValue, hash: u32) -> Result<(), ()> {
    let off = ipip::push(ctx, inner, b, hash, UDP_LEN, IPPROTO_UDP)?;
    let udp = ptr_at::<Udp>(ctx, off).ok_or(())?;
    // SAFETY: bounds checked by ptr_at.
    unsafe { udp.write(header(b, hash, inner.len)) };
    Ok(())
}

/// The UDP header in front of `inner_len` bytes of inner packet to `b`, shared with the
/// health probes' encapsulation (`probe`).
#[inline(always)]
pub fn header(b: &BackendValue, hash: u32, inner_len: u16) -> Udp {
    Udp {
        sport: source_port(hash).to_be(),
        dport: b.gue_port,
        len: (inner_len + UDP_LEN).to_be(),
        check: 0,
    }
}
