//! ICMP and ICMPv6 addressed to a VIP.
//!
//! Echo requests are answered in place when the VIP's `VIP_F_ECHO` is set (else passed):
//! addresses and MACs swapped, TTL / hop limit 64, checksums updated incrementally, out
//! of the interface they came in on. "Fragmentation needed" / "packet too big" sent by a
//! router on the path of a backend's DSR reply (its inner packet comes from the VIP) go
//! to the backend that owns the inner flow, found by the reversed inner 5-tuple, so path
//! MTU discovery works through DSR. Other ICMP passes to the kernel (`pass_icmp`); a
//! message cut short is dropped (`drop_bad_icmp`).

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use fulcrum_common::{Counter, FlowKey, FlowKey6, IPPROTO_TCP, IPPROTO_UDP, VIP_F_ECHO, VipInfo};
use fulcrum_ebpf::header::{Eth, Icmp, Ipv4, Ipv6, ptr_at};

use crate::{
    choose, csum,
    flow::{self, Family, Pinned, Slot, V4, V6},
    forward::{
        self,
        too_big::{ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMPV6_PACKET_TOO_BIG},
    },
    parse::Packet,
    verdict::Verdict,
};

/// What ICMP handling needs of an address family beyond [`Family`].
pub trait IcmpFamily: Family {
    /// Reads the message (echo, an error about a flow, other).
    fn classify(ctx: &XdpContext, pkt: &Packet<Self::Key>) -> Result<Message, Verdict>;
    /// The flow key of an error's reversed inner 5-tuple.
    fn key(m: &Message) -> Option<Self::Key>;
    /// Answers an echo request in place.
    fn echo(ctx: &XdpContext, pkt: &Packet<Self::Key>) -> Verdict;
}

impl IcmpFamily for V4 {
    #[inline(always)]
    fn classify(ctx: &XdpContext, pkt: &Packet<FlowKey>) -> Result<Message, Verdict> {
        classify4(ctx, pkt.l3, pkt.l4, pkt.ip_len, pkt.flow.dst)
    }
    #[inline(always)]
    fn key(m: &Message) -> Option<FlowKey> {
        match *m {
            Message::TooBig {
                src,
                dst,
                sport,
                dport,
                proto,
            } => Some(FlowKey {
                src: src[0],
                dst: dst[0],
                sport,
                dport,
                proto,
                _pad: 0,
                _pad2: 0,
            }),
            _ => None,
        }
    }
    #[inline(always)]
    fn echo(ctx: &XdpContext, pkt: &Packet<FlowKey>) -> Verdict {
        echo_reply4(ctx, pkt.l3, pkt.l4)
    }
}

impl IcmpFamily for V6 {
    #[inline(always)]
    fn classify(ctx: &XdpContext, pkt: &Packet<FlowKey6>) -> Result<Message, Verdict> {
        classify6(ctx, pkt.l3, pkt.l4, pkt.ip_len, &pkt.flow.dst)
    }
    #[inline(always)]
    fn key(m: &Message) -> Option<FlowKey6> {
        match *m {
            Message::TooBig {
                src,
                dst,
                sport,
                dport,
                proto,
            } => Some(FlowKey6 {
                src,
                dst,
                sport,
                dport,
                proto,
                _pad: 0,
                _pad2: 0,
            }),
            _ => None,
        }
    }
    #[inline(always)]
    fn echo(ctx: &XdpContext, pkt: &Packet<FlowKey6>) -> Verdict {
        echo_reply6(ctx, pkt.l3, pkt.l4)
    }
}

/// ICMP (ICMPv6 other than ND) to a VIP, by the rules at the top of this module.
#[inline(always)]
pub fn handle<F: IcmpFamily>(ctx: &XdpContext, pkt: &Packet<F::Key>, vip: &VipInfo) -> Verdict {
    let m = match F::classify(ctx, pkt) {
        Ok(m) => m,
        Err(v) => return v,
    };
    if let Message::Echo = m {
        if vip.flags & VIP_F_ECHO == 0 {
            return Verdict::Pass(Counter::PassIcmp);
        }
        return F::echo(ctx, pkt);
    }
    let Some(key) = F::key(&m) else {
        return Verdict::Pass(Counter::PassIcmp);
    };
    let reason = Counter::IcmpErrorForwarded;
    let chosen = match flow::pinned::<F>(&key, &Slot::<F>::of(&key)) {
        Pinned::Hit(c) => c,
        // No flow known: the backend a new flow would get, pinning nothing.
        _ => {
            let Some(service) = F::service(&key) else {
                return Verdict::Pass(Counter::PassIcmp);
            };
            match choose::maglev::<F>(&key, &service, reason) {
                Ok((c, _)) => c,
                Err(_) => return Verdict::Pass(Counter::PassIcmp),
            }
        }
    };
    // SAFETY: an entry of BACKENDS (array values stay put); plain data.
    let b = unsafe { &*chosen.backend };
    let hash = if forward::needs_hash(b) {
        F::hash(&key, false)
    } else {
        0
    };
    forward::send(ctx, pkt, b, hash, reason)
}

/// ICMP echo request / reply.
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// See [`ICMP_ECHO_REQUEST`].
pub const ICMP_ECHO_REPLY: u8 = 0;
/// ICMPv6 echo request / reply.
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
/// See [`ICMPV6_ECHO_REQUEST`].
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// What an ICMP message to a VIP asks for.
#[derive(Clone, Copy)]
pub enum Message {
    /// An echo request.
    Echo,
    /// An error about a packet the VIP sent: the inner 5-tuple, reversed (the client's
    /// flow to the VIP), addresses as in a flow key.
    TooBig {
        src: [u32; 4],
        dst: [u32; 4],
        sport: u16,
        dport: u16,
        proto: u8,
    },
    /// Anything else: passed.
    Other,
}

/// Reads the ICMP header at `l4` of an IP packet of `ip_len` bytes whose header takes
/// `l4 - l3` bytes; `vip` is the packet's destination. Cut short: `drop_bad_icmp`.
#[inline(always)]
pub fn classify4(
    ctx: &XdpContext,
    l3: usize,
    l4: usize,
    ip_len: usize,
    vip: u32,
) -> Result<Message, Verdict> {
    let bad = Verdict::Drop(Counter::DropBadIcmp);
    if ip_len < (l4 - l3) + size_of::<Icmp>() {
        return Err(bad);
    }
    let icmp = ptr_at::<Icmp>(ctx, l4).ok_or(bad)?;
    // SAFETY (header reads): bounds checked by ptr_at.
    let (ty, code) = unsafe { ((*icmp).ty, (*icmp).code) };
    match (ty, code) {
        (ICMP_ECHO_REQUEST, _) => Ok(Message::Echo),
        (ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED) => {
            let at = l4 + size_of::<Icmp>();
            let inner = ptr_at::<Ipv4>(ctx, at).ok_or(bad)?;
            let inner = unsafe { &*inner };
            let ihl = ((inner.version_ihl & 0x0f) as usize) * 4;
            if inner.version_ihl >> 4 != 4 || ihl < size_of::<Ipv4>() {
                return Err(bad);
            }
            if inner.src != vip || !(inner.proto == IPPROTO_TCP || inner.proto == IPPROTO_UDP) {
                return Ok(Message::Other);
            }
            // Options are at most 40 bytes: a constant bound for the verifier.
            let ports = ptr_at::<[u16; 2]>(ctx, at + (ihl & 0x3c)).ok_or(bad)?;
            let [sport, dport] = unsafe { *ports };
            Ok(Message::TooBig {
                src: [inner.dst, 0, 0, 0],
                dst: [inner.src, 0, 0, 0],
                sport: dport,
                dport: sport,
                proto: inner.proto,
            })
        }
        _ => Ok(Message::Other),
    }
}

/// As [`classify4`] for ICMPv6 after an IPv6 header (and any extension headers) at `l4`;
/// `ip_len` counts the fixed header too. The inner packet is read without extension
/// headers: one that has them is not a flow's and passes.
#[inline(always)]
pub fn classify6(
    ctx: &XdpContext,
    l3: usize,
    l4: usize,
    ip_len: usize,
    vip: &[u32; 4],
) -> Result<Message, Verdict> {
    let bad = Verdict::Drop(Counter::DropBadIcmp);
    if ip_len < (l4 - l3) + size_of::<Icmp>() {
        return Err(bad);
    }
    let icmp = ptr_at::<Icmp>(ctx, l4).ok_or(bad)?;
    // SAFETY (header reads): bounds checked by ptr_at.
    let ty = unsafe { (*icmp).ty };
    match ty {
        ICMPV6_ECHO_REQUEST => Ok(Message::Echo),
        ICMPV6_PACKET_TOO_BIG => {
            let at = l4 + size_of::<Icmp>();
            let inner = ptr_at::<Ipv6>(ctx, at).ok_or(bad)?;
            let inner = unsafe { &*inner };
            if (u32::from_be(inner.vtc_flow) >> 28) != 6 {
                return Err(bad);
            }
            let proto = inner.next_header;
            if inner.src != *vip || !(proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
                return Ok(Message::Other);
            }
            let ports = ptr_at::<[u16; 2]>(ctx, at + size_of::<Ipv6>()).ok_or(bad)?;
            let [sport, dport] = unsafe { *ports };
            Ok(Message::TooBig {
                src: inner.dst,
                dst: inner.src,
                sport: dport,
                dport: sport,
                proto,
            })
        }
        _ => Ok(Message::Other),
    }
}

/// Swaps the Ethernet addresses: the frame goes back to where it came from.
#[inline(always)]
fn swap_macs(ctx: &XdpContext) -> Result<(), Verdict> {
    let eth = ptr_at::<Eth>(ctx, 0).ok_or(Verdict::Drop(Counter::DropBadIcmp))?;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        let m = (*eth).macs;
        (*eth).macs = [m[3], m[4], m[5], m[0], m[1], m[2]];
    }
    Ok(())
}

/// Turns an IPv4 echo request at `l3`/`l4` into its reply, in place.
#[inline(always)]
pub fn echo_reply4(ctx: &XdpContext, l3: usize, l4: usize) -> Verdict {
    let bad = Verdict::Drop(Counter::DropBadIcmp);
    let (Some(ip), Some(icmp)) = (ptr_at::<Ipv4>(ctx, l3), ptr_at::<Icmp>(ctx, l4)) else {
        return bad;
    };
    if let Err(v) = swap_macs(ctx) {
        return v;
    }
    // SAFETY: bounds checked by ptr_at. Words are summed in memory order (see csum).
    unsafe {
        let old = u16::from_ne_bytes([(*ip).ttl, (*ip).proto]);
        let new = u16::from_ne_bytes([64, (*ip).proto]);
        (*ip).ttl = 64;
        (*ip).check = csum::replace16((*ip).check, old, new);
        core::mem::swap(&mut (*ip).src, &mut (*ip).dst);
        let code = (*icmp).code;
        (*icmp).ty = ICMP_ECHO_REPLY;
        (*icmp).check = csum::replace16(
            (*icmp).check,
            u16::from_ne_bytes([ICMP_ECHO_REQUEST, code]),
            u16::from_ne_bytes([ICMP_ECHO_REPLY, code]),
        );
    }
    Verdict::Tx(Counter::IcmpEchoReply)
}

/// Turns an ICMPv6 echo request at `l3`/`l4` into its reply, in place (swapping the
/// addresses leaves the pseudo-header's sum as it was).
#[inline(always)]
pub fn echo_reply6(ctx: &XdpContext, l3: usize, l4: usize) -> Verdict {
    let bad = Verdict::Drop(Counter::DropBadIcmp);
    let (Some(ip), Some(icmp)) = (ptr_at::<Ipv6>(ctx, l3), ptr_at::<Icmp>(ctx, l4)) else {
        return bad;
    };
    if let Err(v) = swap_macs(ctx) {
        return v;
    }
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        (*ip).hop_limit = 64;
        core::mem::swap(&mut (*ip).src, &mut (*ip).dst);
        let code = (*icmp).code;
        (*icmp).ty = ICMPV6_ECHO_REPLY;
        (*icmp).check = csum::replace16(
            (*icmp).check,
            u16::from_ne_bytes([ICMPV6_ECHO_REQUEST, code]),
            u16::from_ne_bytes([ICMPV6_ECHO_REPLY, code]),
        );
    }
    Verdict::Tx(Counter::IcmpEchoReply)
}
