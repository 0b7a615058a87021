//! IP-in-IP (4in4, 6in6, 4in6): a new outer IP header in front of the packet as it came,
//! addressed to the backend, and the Ethernet header of the next hop (the backend on its
//! segment, or the router towards it). The backend's `fulcrum decap` strips it again.
//!
//! Outer IPv4: DF, TTL 64, ToS copied, id 0 (DF packets are never fragmented, RFC 6864),
//! checksum computed. Outer IPv6: hop limit 64, traffic class copied, flow label from the
//! flow hash (routers hashing on the 3-tuple then still spread flows). The source is the
//! backend entry's, with the host bits in `src_mask` taken from the flow hash.

use core::mem::size_of;

use fulcrum_common::{BACKEND_V_TUNNEL6, BACKEND_V_VLAN, BackendValue, Counter};
use fulcrum_ebpf::header::{
    ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, Eth, IPPROTO_IPIP, IPPROTO_IPV6, Ipv4, Ipv6, Vlan,
    adjust_head, ptr_at,
};

use super::{too_big, transmit};
use crate::{csum, parse::Packet, verdict::Verdict};

/// Outer IPv4 header bytes.
pub const OVERHEAD4: u16 = size_of::<Ipv4>() as u16;
/// Outer IPv6 header bytes.
pub const OVERHEAD6: u16 = size_of::<Ipv6>() as u16;

/// What encapsulation needs of the packet as it came.
#[derive(Clone, Copy)]
pub struct Inner {
    /// Offset of its IP header (after Ethernet and any 802.1Q tag).
    pub l3: usize,
    /// Its IP header is IPv6.
    pub v6: bool,
    /// Its IP length (header and payload; trailing Ethernet padding excluded).
    pub len: u16,
}

impl Inner {
    /// The packet as it came.
    #[inline(always)]
    pub fn of<K>(pkt: &Packet<K>) -> Self {
        Self {
            l3: pkt.l3,
            v6: pkt.ipv6,
            len: pkt.ip_len as u16,
        }
    }
}

/// IP-in-IP to backend `b`, or the oversize rule's answer.
#[inline(always)]
pub fn send<K>(
    ctx: &aya_ebpf::programs::XdpContext,
    pkt: &Packet<K>,
    b: &BackendValue,
    hash: u32,
    reason: Counter,
) -> Verdict {
    let inner = Inner::of(pkt);
    if let Some(v) = too_big::check(ctx, &inner, b.mtu, outer_ip_len(b)) {
        return v;
    }
    if encapsulate(ctx, &inner, b, hash).is_err() {
        return Verdict::Drop(Counter::DropEncap);
    }
    transmit(ctx, b, reason)
}

/// Bytes of the outer IP header this backend's tunnel adds.
#[inline(always)]
pub fn outer_ip_len(b: &BackendValue) -> u16 {
    if b.flags & BACKEND_V_TUNNEL6 != 0 {
        OVERHEAD6
    } else {
        OVERHEAD4
    }
}

/// Encapsulates in IP-in-IP; `Err` when the frame cannot grow (`drop_encap`).
#[inline(always)]
pub fn encapsulate(
    ctx: &aya_ebpf::programs::XdpContext,
    inner: &Inner,
    b: &BackendValue,
    hash: u32,
) -> Result<(), ()> {
    let proto = if inner.v6 { IPPROTO_IPV6 } else { IPPROTO_IPIP };
    push(ctx, inner, b, hash, 0, proto).map(|_| ())
}

/// Makes room for an outer IP header and `extra` bytes after it (GUE's UDP header),
/// writes the Ethernet header (next hop, VLAN rule) and the outer IP header with
/// protocol `proto` and a payload of `extra` + the inner packet; returns the offset of
/// the `extra` bytes.
#[inline(always)]
pub fn push(
    ctx: &aya_ebpf::programs::XdpContext,
    inner: &Inner,
    b: &BackendValue,
    hash: u32,
    extra: u16,
    proto: u8,
) -> Result<usize, ()> {
    let l3_in = inner.l3;
    let tagged_in = l3_in != size_of::<Eth>();
    // The traffic class / ToS, read before the head moves.
    let first = ptr_at::<[u8; 2]>(ctx, l3_in).ok_or(())?;
    // SAFETY: bounds checked by ptr_at.
    let [b0, b1] = unsafe { *first };
    let tos = if inner.v6 { (b0 << 4) | (b1 >> 4) } else { b1 };
    let mut tci = 0u16;
    if tagged_in {
        let vlan = ptr_at::<Vlan>(ctx, size_of::<Eth>()).ok_or(())?;
        // SAFETY: bounds checked by ptr_at.
        tci = unsafe { (*vlan).tci };
    }
    let tagged_out = tagged_in || b.flags & BACKEND_V_VLAN != 0;
    if b.flags & BACKEND_V_VLAN != 0 {
        tci = b.vlan;
    }
    let l3 = if tagged_out {
        size_of::<Eth>() + size_of::<Vlan>()
    } else {
        size_of::<Eth>()
    };
    let v6_out = b.flags & BACKEND_V_TUNNEL6 != 0;
    let ip_len = if v6_out { OVERHEAD6 } else { OVERHEAD4 };
    let grow = (l3 - l3_in) as i32 + i32::from(ip_len) + i32::from(extra);
    adjust_head(ctx, -grow)?;

    let eth = ptr_at::<Eth>(ctx, 0).ok_or(())?;
    let ether_type = if v6_out { ETH_P_IPV6 } else { ETH_P_IP }.to_be();
    // SAFETY (all header writes): bounds checked by ptr_at; `mac` then `src_mac` are the
    // 12 bytes of the two addresses.
    unsafe {
        (*eth).macs = *(&raw const b.mac).cast::<[u16; 6]>();
        if tagged_out {
            let vlan = ptr_at::<Vlan>(ctx, size_of::<Eth>()).ok_or(())?;
            (*eth).ether_type = ETH_P_8021Q.to_be();
            (*vlan).tci = tci;
            (*vlan).ether_type = ether_type;
        } else {
            (*eth).ether_type = ether_type;
        }
    }
    let payload = inner.len + extra;
    if v6_out {
        let ip = ptr_at::<Ipv6>(ctx, l3).ok_or(())?;
        // SAFETY: as above.
        unsafe { ip.write(outer6(b, hash, tos, payload, proto)) };
        Ok(l3 + OVERHEAD6 as usize)
    } else {
        let ip = ptr_at::<Ipv4>(ctx, l3).ok_or(())?;
        // SAFETY: as above.
        unsafe { ip.write(outer4(b, hash, tos, payload, proto)) };
        Ok(l3 + OVERHEAD4 as usize)
    }
}

/// The outer IPv6 header to `b` for `payload` bytes of protocol `proto`, shared with the
/// health probes' encapsulation (`probe`).
#[inline(always)]
pub fn outer6(b: &BackendValue, hash: u32, tos: u8, payload: u16, proto: u8) -> Ipv6 {
    let mut src = b.src;
    src[3] = (src[3] & !b.src_mask) | (hash & b.src_mask);
    Ipv6 {
        vtc_flow: ((6 << 28) | (u32::from(tos) << 20) | (hash & 0x000f_ffff)).to_be(),
        payload_len: payload.to_be(),
        next_header: proto,
        hop_limit: 64,
        src,
        dst: b.dst,
    }
}

/// The outer IPv4 header to `b` (checksum included), as [`outer6`].
#[inline(always)]
pub fn outer4(b: &BackendValue, hash: u32, tos: u8, payload: u16, proto: u8) -> Ipv4 {
    let mut ip = Ipv4 {
        version_ihl: 0x45,
        tos,
        total_len: (payload + OVERHEAD4).to_be(),
        id: 0,
        frag: 0x4000u16.to_be(),
        ttl: 64,
        proto,
        check: 0,
        src: (b.src[0] & !b.src_mask) | (hash & b.src_mask),
        dst: b.dst[0],
    };
    // SAFETY: a whole header on the stack.
    ip.check = unsafe { csum::ipv4_header(&raw const ip) };
    ip
}
