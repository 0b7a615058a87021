//! The oversize rule for tunnelled packets. XDP cannot fragment, so a packet that would
//! exceed the egress MTU once encapsulated is answered the way a router on the path
//! would: IPv4 with DF set and every IPv6 packet get ICMP "fragmentation needed" (type 3
//! code 4) / ICMPv6 "packet too big" from the VIP, carrying the MTU the inner packet may
//! have (egress MTU − overhead); IPv4 without DF is dropped (`drop_too_big`).
//!
//! IPv6 paths may not go below 1280 (RFC 8200 §5), so a "packet too big" never says
//! less: with an egress MTU below 1280 + overhead, packets of 1280 bytes or less that
//! still do not fit are dropped (`drop_too_big`), never answered.
//!
//! The answer quotes the first [`QUOTE`] bytes of the original IP packet (its header and
//! the start of its payload, enough for the sender to find its socket), so it is built
//! in place with constant sizes: the tail is cut, room for the new headers is made at
//! the head, and the frame goes back out where it came from.

use core::mem::size_of;

use aya_ebpf::{helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use fulcrum_common::Counter;
use fulcrum_ebpf::header::{
    ETH_P_IP, ETH_P_IPV6, Eth, IPPROTO_ICMP, IPPROTO_ICMPV6, IPV4_DF, Icmp, Ipv4, Ipv6,
    adjust_head, frame_len, ptr_at,
};

use super::ipip::Inner;
use crate::{csum, verdict::Verdict};

/// Bytes of the original IP packet an answer quotes (a multiple of 4, for `bpf_csum_diff`).
pub const QUOTE: usize = 256;
/// ICMP type "destination unreachable", code "fragmentation needed and DF set".
pub const ICMP_DEST_UNREACH: u8 = 3;
/// See [`ICMP_DEST_UNREACH`].
pub const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMPv6 "packet too big".
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// The smallest MTU of an IPv6 path.
pub const IPV6_MIN_MTU: u16 = 1280;

/// `None` when the packet fits the egress MTU once `overhead` bytes are added; else the
/// verdict of the oversize rule.
#[inline(always)]
pub fn check(ctx: &XdpContext, inner: &Inner, mtu: u16, overhead: u16) -> Option<Verdict> {
    if u32::from(inner.len) + u32::from(overhead) <= u32::from(mtu) {
        return None;
    }
    let room = mtu.saturating_sub(overhead);
    if inner.v6 {
        if inner.len <= IPV6_MIN_MTU {
            return Some(Verdict::Drop(Counter::DropTooBig));
        }
        return Some(answer6(ctx, inner.l3, room.max(IPV6_MIN_MTU)));
    }
    let ip = ptr_at::<Ipv4>(ctx, inner.l3)?;
    // SAFETY: bounds checked by ptr_at.
    if u16::from_be(unsafe { (*ip).frag }) & IPV4_DF == 0 {
        return Some(Verdict::Drop(Counter::DropTooBig));
    }
    Some(answer4(ctx, inner.l3, room))
}

/// Cuts the frame to `l3` + [`QUOTE`] bytes, then makes room for `grow` bytes of new
/// headers and writes the Ethernet header back, addresses swapped (the VLAN tag, if
/// any, kept), with `ether_type`.
#[inline(always)]
fn reshape(ctx: &XdpContext, l3: usize, grow: usize, ether_type: u16) -> Result<(), ()> {
    let keep = l3 + QUOTE;
    let len = frame_len(ctx);
    if len > keep {
        // SAFETY: the context of this program; shrinking never goes below `keep`.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -((len - keep) as i32)) } != 0 {
            return Err(());
        }
    }
    adjust_head(ctx, -(grow as i32))?;
    let new = ptr_at::<Eth>(ctx, 0).ok_or(())?;
    let old = ptr_at::<Eth>(ctx, grow).ok_or(())?;
    // SAFETY: bounds checked by ptr_at; the two headers do not overlap (grow ≥ 28).
    unsafe {
        let m = (*old).macs;
        (*new).macs = [m[3], m[4], m[5], m[0], m[1], m[2]];
        if l3 != size_of::<Eth>() {
            let tag = ptr_at::<u32>(ctx, 12).ok_or(())?;
            let old_tag = ptr_at::<u32>(ctx, grow + 12).ok_or(())?;
            *tag = *old_tag;
            let et = ptr_at::<u16>(ctx, 16).ok_or(())?;
            *et = ether_type.to_be();
        } else {
            (*new).ether_type = ether_type.to_be();
        }
    }
    Ok(())
}

/// ICMP "fragmentation needed" with next-hop MTU `mtu`, from the VIP to the sender.
#[inline(always)]
fn answer4(ctx: &XdpContext, l3: usize, mtu: u16) -> Verdict {
    let Some(ip) = ptr_at::<Ipv4>(ctx, l3) else {
        return Verdict::Drop(Counter::DropTooBig);
    };
    // SAFETY: bounds checked by ptr_at.
    let (client, vip) = unsafe { ((*ip).src, (*ip).dst) };
    const GROW: usize = size_of::<Ipv4>() + size_of::<Icmp>();
    // Only a tiny MTU makes an oversize packet shorter than the quote.
    if frame_len(ctx) < l3 + QUOTE {
        return Verdict::Drop(Counter::DropTooBig);
    }
    if reshape(ctx, l3, GROW, ETH_P_IP).is_err() {
        return Verdict::Drop(Counter::DropEncap);
    }
    let (Some(ip), Some(icmp)) = (
        ptr_at::<Ipv4>(ctx, l3),
        ptr_at::<[u8; size_of::<Icmp>() + QUOTE]>(ctx, l3 + size_of::<Ipv4>()),
    ) else {
        return Verdict::Drop(Counter::DropTooBig);
    };
    // SAFETY: bounds checked by ptr_at; the ICMP message is 8 + QUOTE readable bytes.
    unsafe {
        (*ip).version_ihl = 0x45;
        (*ip).tos = 0;
        (*ip).total_len = (GROW as u16 + QUOTE as u16).to_be();
        (*ip).id = 0;
        (*ip).frag = 0;
        (*ip).ttl = 64;
        (*ip).proto = IPPROTO_ICMP;
        (*ip).check = 0;
        (*ip).src = vip;
        (*ip).dst = client;
        (*ip).check = csum::ipv4_header(ip);
        let h = icmp.cast::<Icmp>();
        (*h).ty = ICMP_DEST_UNREACH;
        (*h).code = ICMP_FRAG_NEEDED;
        (*h).check = 0;
        (*h).rest = u32::from(mtu).to_be();
        let sum = csum::sum_bytes(icmp.cast(), (size_of::<Icmp>() + QUOTE) as u32, 0);
        (*h).check = !csum::fold(sum);
    }
    Verdict::Tx(Counter::IcmpTooBigSent)
}

/// ICMPv6 "packet too big" with MTU `mtu`, from the VIP to the sender.
#[inline(always)]
fn answer6(ctx: &XdpContext, l3: usize, mtu: u16) -> Verdict {
    let Some(ip) = ptr_at::<Ipv6>(ctx, l3) else {
        return Verdict::Drop(Counter::DropTooBig);
    };
    // SAFETY: bounds checked by ptr_at.
    let (client, vip) = unsafe { ((*ip).src, (*ip).dst) };
    const GROW: usize = size_of::<Ipv6>() + size_of::<Icmp>();
    const MSG: usize = size_of::<Icmp>() + QUOTE;
    // Only a tiny MTU makes an oversize packet shorter than the quote.
    if frame_len(ctx) < l3 + QUOTE {
        return Verdict::Drop(Counter::DropTooBig);
    }
    if reshape(ctx, l3, GROW, ETH_P_IPV6).is_err() {
        return Verdict::Drop(Counter::DropEncap);
    }
    let (Some(ip), Some(icmp)) = (
        ptr_at::<Ipv6>(ctx, l3),
        ptr_at::<[u8; MSG]>(ctx, l3 + size_of::<Ipv6>()),
    ) else {
        return Verdict::Drop(Counter::DropTooBig);
    };
    // The pseudo-header: both addresses, the length and the next header (RFC 8200 §8.1).
    let mut pseudo = u64::from(csum::fold(
        csum::words((MSG as u32).to_be()) + csum::words(u32::from(IPPROTO_ICMPV6).to_be()),
    ));
    for i in 0..4 {
        pseudo += csum::words(client[i]) + csum::words(vip[i]);
    }
    // SAFETY: bounds checked by ptr_at; the ICMPv6 message is MSG readable bytes.
    unsafe {
        (*ip).vtc_flow = (6u32 << 28).to_be();
        (*ip).payload_len = (MSG as u16).to_be();
        (*ip).next_header = IPPROTO_ICMPV6;
        (*ip).hop_limit = 64;
        (*ip).src = vip;
        (*ip).dst = client;
        let h = icmp.cast::<Icmp>();
        (*h).ty = ICMPV6_PACKET_TOO_BIG;
        (*h).code = 0;
        (*h).check = 0;
        (*h).rest = u32::from(mtu).to_be();
        let sum = csum::sum_bytes(icmp.cast(), MSG as u32, u32::from(csum::fold(pseudo)));
        (*h).check = !csum::fold(sum);
    }
    Verdict::Tx(Counter::IcmpTooBigSent)
}
