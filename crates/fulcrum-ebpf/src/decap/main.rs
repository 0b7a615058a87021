//! `fulcrum-decap`: strips the tunnel headers the balancer adds (IP-in-IP, GUE) from packets
//! addressed to this host and passes the inner packet to the kernel, so a backend needs no
//! tunnel module.
//!
//! Rules, in the order they apply; every packet counts exactly one
//! `fulcrum_common::decap::DecapCounter`:
//! 1. Ethernet with at most one 802.1Q tag (kept); not IPv4/IPv6, or an outer IP header
//!    cut short: passes (`pass_not_ip`).
//! 2. Tunnel traffic is: outer protocol 4 or 41 (IPv4 or IPv6 outer; for IPv6 directly or
//!    behind a Fragment header), or UDP to a configured GUE port (the port is read only when
//!    it can be: valid IPv4 header length, first fragment, UDP header present). Other IPv6
//!    extension headers are not skipped. Anything else passes (`pass_not_tunnel`).
//! 3. The outer destination must be one of the host's addresses (map filled by user
//!    space), else the frame passes (`pass_not_local`).
//! 4. From here on a malformed packet is dropped: outer IPv4 version not 4 or header
//!    shorter than 20 bytes (`drop_bad_outer`), IPv6 version not 6 (`drop_bad_outer`), IPv4
//!    options (`drop_ipv4_options`), an outer fragment (`drop_fragment`), an outer IP length
//!    beyond the frame or below its headers, a UDP length below 8 or beyond the IP payload
//!    (`drop_length`).
//! 5. GUE: first bits 01 is variant 1 (the inner IP header directly; its version nibble must
//!    be 4 or 6, else `drop_gue_version`); 00 is variant 0: a control message
//!    (`drop_gue_control`), options or flags (`drop_gue_options`), a protocol other than 4
//!    or 41 (`drop_gue_protocol`) drop; other versions drop (`drop_gue_version`). The UDP
//!    checksum is not checked (the balancer sends 0).
//! 6. The inner header must be inside the outer packet (`drop_truncated`) and of the
//!    family the outer header claims (`drop_inner_family`).
//! 7. The outer headers are removed, the EtherType set to the inner family, and the inner
//!    packet passes (`decap_ipip`, `decap_gue`). Bytes after the outer packet (Ethernet
//!    padding) stay; the kernel trims by the inner length.
#![no_std]
#![no_main]

mod maps;

use core::mem::size_of;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use fulcrum_common::decap::DecapCounter;
use fulcrum_ebpf::header::{
    ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, Eth, GueHeader, IPPROTO_FRAGMENT, IPPROTO_IPIP,
    IPPROTO_IPV6, IPPROTO_UDP, IPV4_MF_AND_OFFSET, Ipv4, Ipv6, Ipv6Frag, Udp, Vlan, adjust_head,
    frame_len, ptr_at,
};
use maps::{DECAP_ADDRS4, DECAP_ADDRS6, DECAP_GUE_PORTS, DECAP_STATS};

use DecapCounter as C;

const IPV4_OFFSET: u16 = 0x1fff;
const IPV6_OFFSET: u16 = 0xfff8;
const IPV6_MORE: u16 = 0x0001;
const GUE_C: u8 = 0x20;
const GUE_HLEN: u8 = 0x1f;

#[xdp]
pub fn fulcrum_decap(ctx: XdpContext) -> u32 {
    let reason = decap(&ctx);
    if let Some(stats) = DECAP_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        if let Some(c) = unsafe { (*stats).counts.get_mut(reason as usize) } {
            *c += 1;
        }
    }
    if (reason as u32) < C::DropTruncated as u32 {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of_proto(proto: u8) -> Option<Self> {
        match proto {
            IPPROTO_IPIP => Some(Family::V4),
            IPPROTO_IPV6 => Some(Family::V6),
            _ => None,
        }
    }
}

/// What the outer headers say, before they are checked.
enum Kind {
    /// IP-in-IP carrying this family.
    Ipip(Family),
    /// UDP to a GUE port; the UDP header's offset.
    Gue(usize),
}

/// A tunnel packet for this host whose outer IP header passed its checks.
struct Outer {
    kind: Kind,
    /// Offset of the outer payload (the inner header, or UDP).
    l4: usize,
    /// End of the outer IP packet.
    end: usize,
}

#[inline(always)]
fn decap(ctx: &XdpContext) -> DecapCounter {
    let Some(eth) = ptr_at::<Eth>(ctx, 0) else {
        return C::PassNotIp;
    };
    // SAFETY (header reads): bounds checked by ptr_at.
    let mut ether_type = unsafe { (*eth).ether_type };
    let mut l3 = size_of::<Eth>();
    let tagged = ether_type == ETH_P_8021Q.to_be();
    if tagged {
        let Some(vlan) = ptr_at::<Vlan>(ctx, l3) else {
            return C::PassNotIp;
        };
        ether_type = unsafe { (*vlan).ether_type };
        l3 += size_of::<Vlan>();
    }
    let outer = if ether_type == ETH_P_IP.to_be() {
        outer4(ctx, l3)
    } else if ether_type == ETH_P_IPV6.to_be() {
        outer6(ctx, l3)
    } else {
        return C::PassNotIp;
    };
    let outer = match outer {
        Ok(o) => o,
        Err(c) => return c,
    };
    let (family, inner, reason) = match outer.kind {
        Kind::Ipip(family) => (family, outer.l4, C::DecapIpip),
        Kind::Gue(udp) => match gue(ctx, udp, outer.end) {
            Ok((family, inner)) => (family, inner, C::DecapGue),
            Err(c) => return c,
        },
    };
    if let Err(c) = check_inner(ctx, family, inner, outer.end) {
        return c;
    }
    let new_type = match family {
        Family::V4 => ETH_P_IP.to_be(),
        Family::V6 => ETH_P_IPV6.to_be(),
    };
    match strip(ctx, tagged, inner - l3, new_type) {
        Ok(()) => reason,
        Err(()) => C::DropAdjustHead,
    }
}

/// Classifies and checks an outer IPv4 header (rules 2–4).
#[inline(always)]
fn outer4(ctx: &XdpContext, l3: usize) -> Result<Outer, DecapCounter> {
    let ip = ptr_at::<Ipv4>(ctx, l3).ok_or(C::PassNotIp)?;
    // SAFETY (header reads): bounds checked by ptr_at.
    let ip = unsafe { &*ip };
    let ihl = ((ip.version_ihl & 0x0f) as usize) * 4;
    let version_ok = ip.version_ihl >> 4 == 4 && ihl >= size_of::<Ipv4>();
    let frag = u16::from_be(ip.frag);
    let kind = if let Some(family) = Family::of_proto(ip.proto) {
        Kind::Ipip(family)
    } else if ip.proto == IPPROTO_UDP && version_ok && frag & IPV4_OFFSET == 0 {
        let udp = l3 + ihl;
        if !gue_port(ctx, udp) {
            return Err(C::PassNotTunnel);
        }
        Kind::Gue(udp)
    } else {
        return Err(C::PassNotTunnel);
    };
    let dst = ip.dst;
    if DECAP_ADDRS4.get_ptr(dst).is_none() {
        return Err(C::PassNotLocal);
    }
    if !version_ok {
        return Err(C::DropBadOuter);
    }
    if ihl != size_of::<Ipv4>() {
        return Err(C::DropIpv4Options);
    }
    if frag & IPV4_MF_AND_OFFSET != 0 {
        return Err(C::DropFragment);
    }
    let total = u16::from_be(ip.total_len) as usize;
    if total < ihl || l3 + total > frame_len(ctx) {
        return Err(C::DropLength);
    }
    Ok(Outer {
        kind,
        l4: l3 + ihl,
        end: l3 + total,
    })
}

/// Classifies and checks an outer IPv6 header (rules 2–4).
#[inline(always)]
fn outer6(ctx: &XdpContext, l3: usize) -> Result<Outer, DecapCounter> {
    let ip = ptr_at::<Ipv6>(ctx, l3).ok_or(C::PassNotIp)?;
    // SAFETY (header reads): bounds checked by ptr_at.
    let ip = unsafe { &*ip };
    let mut l4 = l3 + size_of::<Ipv6>();
    let mut proto = ip.next_header;
    let mut fragment = false;
    if proto == IPPROTO_FRAGMENT {
        let frag = ptr_at::<Ipv6Frag>(ctx, l4).ok_or(C::PassNotTunnel)?;
        let frag = unsafe { &*frag };
        let off = u16::from_be(frag.frag_off);
        fragment = off & (IPV6_OFFSET | IPV6_MORE) != 0;
        if frag.next_header == IPPROTO_UDP && off & IPV6_OFFSET != 0 {
            return Err(C::PassNotTunnel);
        }
        proto = frag.next_header;
        l4 += size_of::<Ipv6Frag>();
    }
    let kind = if let Some(family) = Family::of_proto(proto) {
        Kind::Ipip(family)
    } else if proto == IPPROTO_UDP && gue_port(ctx, l4) {
        Kind::Gue(l4)
    } else {
        return Err(C::PassNotTunnel);
    };
    let dst = ip.dst;
    if DECAP_ADDRS6.get_ptr(dst).is_none() {
        return Err(C::PassNotLocal);
    }
    if u32::from_be(ip.vtc_flow) >> 28 != 6 {
        return Err(C::DropBadOuter);
    }
    if fragment {
        return Err(C::DropFragment);
    }
    let end = l3 + size_of::<Ipv6>() + u16::from_be(ip.payload_len) as usize;
    if end > frame_len(ctx) || end < l4 {
        return Err(C::DropLength);
    }
    Ok(Outer { kind, l4, end })
}

/// Whether a UDP header at `udp` is there and goes to a GUE port.
#[inline(always)]
fn gue_port(ctx: &XdpContext, udp: usize) -> bool {
    let Some(udp) = ptr_at::<Udp>(ctx, udp) else {
        return false;
    };
    // SAFETY: bounds checked by ptr_at.
    let port = unsafe { (*udp).dport };
    DECAP_GUE_PORTS.get_ptr(port).is_some()
}

/// Checks UDP and GUE (rules 4–5): the inner family and header offset.
#[inline(always)]
fn gue(ctx: &XdpContext, udp_at: usize, end: usize) -> Result<(Family, usize), DecapCounter> {
    let udp = ptr_at::<Udp>(ctx, udp_at).ok_or(C::DropTruncated)?;
    // SAFETY (header reads): bounds checked by ptr_at.
    let len = u16::from_be(unsafe { (*udp).len }) as usize;
    if len < size_of::<Udp>() || udp_at + len > end {
        return Err(C::DropLength);
    }
    let at = udp_at + size_of::<Udp>();
    let first = ptr_at::<u8>(ctx, at).ok_or(C::DropTruncated)?;
    let first = unsafe { *first };
    match first >> 6 {
        1 => match first >> 4 {
            4 => Ok((Family::V4, at)),
            6 => Ok((Family::V6, at)),
            _ => Err(C::DropGueVersion),
        },
        0 => {
            let gue = ptr_at::<GueHeader>(ctx, at).ok_or(C::DropTruncated)?;
            let gue = unsafe { &*gue };
            if gue.flags_hlen & GUE_C != 0 {
                return Err(C::DropGueControl);
            }
            if gue.flags_hlen & GUE_HLEN != 0 || gue.flags != 0 {
                return Err(C::DropGueOptions);
            }
            let family = Family::of_proto(gue.proto).ok_or(C::DropGueProtocol)?;
            Ok((family, at + size_of::<GueHeader>()))
        }
        _ => Err(C::DropGueVersion),
    }
}

/// Rule 6: the inner header is there, inside the outer packet, and of the claimed family.
#[inline(always)]
fn check_inner(
    ctx: &XdpContext,
    family: Family,
    at: usize,
    end: usize,
) -> Result<(), DecapCounter> {
    let size = match family {
        Family::V4 => size_of::<Ipv4>(),
        Family::V6 => size_of::<Ipv6>(),
    };
    if at + size > end {
        return Err(C::DropTruncated);
    }
    // SAFETY (header reads): bounds checked by ptr_at.
    let version = match family {
        Family::V4 => unsafe { (*ptr_at::<Ipv4>(ctx, at).ok_or(C::DropTruncated)?).version_ihl },
        Family::V6 => unsafe {
            *ptr_at::<Ipv6>(ctx, at)
                .ok_or(C::DropTruncated)?
                .cast::<u8>()
        },
    } >> 4;
    let want = match family {
        Family::V4 => 4,
        Family::V6 => 6,
    };
    if version != want {
        return Err(C::DropInnerFamily);
    }
    Ok(())
}

/// Removes `len` bytes after the Ethernet header (and tag), which moves forward with its
/// EtherType set to `ether_type` (network order).
#[inline(always)]
fn strip(ctx: &XdpContext, tagged: bool, len: usize, ether_type: u16) -> Result<(), ()> {
    let eth = ptr_at::<Eth>(ctx, 0).ok_or(())?;
    // SAFETY (reads and writes): bounds checked by ptr_at, before and after the move.
    let mut eth = unsafe { core::ptr::read_unaligned(eth) };
    if tagged {
        let vlan = ptr_at::<Vlan>(ctx, size_of::<Eth>()).ok_or(())?;
        let mut vlan = unsafe { core::ptr::read_unaligned(vlan) };
        vlan.ether_type = ether_type;
        adjust_head(ctx, len as i32)?;
        let at = ptr_at::<Vlan>(ctx, size_of::<Eth>()).ok_or(())?;
        unsafe { core::ptr::write_unaligned(at, vlan) };
    } else {
        eth.ether_type = ether_type;
        adjust_head(ctx, len as i32)?;
    }
    let at = ptr_at::<Eth>(ctx, 0).ok_or(())?;
    unsafe { core::ptr::write_unaligned(at, eth) };
    Ok(())
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
