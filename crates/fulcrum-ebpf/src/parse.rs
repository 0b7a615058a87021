//! Ethernet (one optional 802.1Q tag), IPv4, IPv6 and TCP/UDP, in the documented order:
//! what cannot be VIP traffic passes, VIP traffic that is malformed or unsupported drops.
//!
//! IPv6: Hop-by-Hop, Routing and Destination Options headers are skipped, at most
//! [`MAX_IPV6_EXT`] of them (more, or one cut short: `drop_ipv6_ext_headers`); a Fragment
//! header is `drop_fragment`; a payload length beyond the frame is `drop_ip_length`; ND
//! (ICMPv6 133–137) passes untouched.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use fulcrum_common::{Counter, FlowKey, FlowKey6, IPPROTO_TCP, IPPROTO_UDP};
use fulcrum_ebpf::header::{
    ETH_P_8021Q, Eth, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP,
    IPPROTO_ICMPV6, IPPROTO_ROUTING, IPV4_MF_AND_OFFSET, Icmp, Ipv4, Ipv6, Ipv6Ext, TCP_ACK,
    TCP_SYN, Tcp, Udp, Vlan, frame_len, ptr_at,
};

use crate::verdict::Verdict;

/// Most IPv6 extension headers skipped before the L4 header.
pub const MAX_IPV6_EXT: usize = 4;

/// ICMPv6 types of neighbour discovery (router solicitation to redirect).
const ND_FIRST: u8 = 133;
const ND_LAST: u8 = 137;

/// Where the IP header starts.
pub struct L2 {
    /// EtherType after any 802.1Q tag, network order.
    pub ether_type: u16,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the 802.1Q tag's TCI; 0 when the frame came untagged.
    pub vlan: usize,
}

/// A packet for a (probable) VIP, as forwarding needs it.
#[allow(
    dead_code,
    reason = "the offsets are for the ICMP and tunnel modules, which fill in later"
)]
pub struct Packet<K> {
    /// The IP header is IPv6.
    pub ipv6: bool,
    /// Offset of the 802.1Q tag's TCI; 0 when the frame came untagged.
    pub vlan: usize,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the L4 header (after IPv6 extension headers).
    pub l4: usize,
    /// IP header and payload in bytes (trailing Ethernet padding excluded).
    pub ip_len: usize,
    /// The 5-tuple, ports 0 for ICMP.
    pub flow: K,
    /// TCP SYN without ACK: a connection being opened.
    pub syn: bool,
}

/// What a packet for a (probable) VIP carries.
pub enum L4<K> {
    /// TCP or UDP: balanced.
    Flow(Packet<K>),
    /// ICMP, or ICMPv6 other than ND.
    Icmp(Packet<K>),
}

/// The Ethernet header and one optional tag; a short frame passes.
#[inline(always)]
pub fn l2(ctx: &XdpContext) -> Result<L2, Verdict> {
    let eth = ptr_at::<Eth>(ctx, 0).ok_or(Verdict::Pass(Counter::PassMalformedL2))?;
    // SAFETY (header reads): bounds checked by ptr_at.
    let mut ether_type = unsafe { (*eth).ether_type };
    let mut l3 = size_of::<Eth>();
    let mut vlan = 0;
    if ether_type == ETH_P_8021Q.to_be() {
        let tag = ptr_at::<Vlan>(ctx, l3).ok_or(Verdict::Pass(Counter::PassMalformedL2))?;
        ether_type = unsafe { (*tag).ether_type };
        vlan = l3;
        l3 += size_of::<Vlan>();
    }
    Ok(L2 {
        ether_type,
        l3,
        vlan,
    })
}

/// Checks the IPv4 header of (probable) VIP traffic and reads its L4 header.
#[inline(always)]
pub fn ipv4(ctx: &XdpContext, ip: *const Ipv4, l2: &L2) -> Result<L4<FlowKey>, Verdict> {
    // SAFETY (header reads): bounds checked by the caller's ptr_at.
    let ip = unsafe { &*ip };
    const IP_HLEN: usize = size_of::<Ipv4>();
    let l3 = l2.l3;
    let version = ip.version_ihl >> 4;
    let ihl = ((ip.version_ihl & 0x0f) as usize) * 4;
    let total_len = u16::from_be(ip.total_len) as usize;
    if version != 4 || ihl < IP_HLEN || total_len < ihl {
        return Err(Verdict::Drop(Counter::DropBadIpHeader));
    }
    if l3 + total_len > frame_len(ctx) {
        return Err(Verdict::Drop(Counter::DropIpLength));
    }
    if u16::from_be(ip.frag) & IPV4_MF_AND_OFFSET != 0 {
        return Err(Verdict::Drop(Counter::DropFragment));
    }
    if ihl != IP_HLEN {
        return Err(Verdict::Drop(Counter::DropIpOptions));
    }
    let l4 = l3 + IP_HLEN;
    let mut pkt = Packet {
        ipv6: false,
        vlan: l2.vlan,
        l3,
        l4,
        ip_len: total_len,
        flow: FlowKey {
            src: ip.src,
            dst: ip.dst,
            sport: 0,
            dport: 0,
            proto: ip.proto,
            _pad: 0,
            _pad2: 0,
        },
        syn: false,
    };
    if ip.proto == IPPROTO_ICMP {
        return Ok(L4::Icmp(pkt));
    }
    let (sport, dport, syn) = ports(ctx, ip.proto, l4, total_len - IP_HLEN)?;
    pkt.flow.sport = sport;
    pkt.flow.dport = dport;
    pkt.syn = syn;
    Ok(L4::Flow(pkt))
}

/// Checks the IPv6 header of (probable) VIP traffic, skips extension headers by the
/// module's rule and reads the L4 header.
#[inline(always)]
pub fn ipv6(ctx: &XdpContext, ip: *const Ipv6, l2: &L2) -> Result<L4<FlowKey6>, Verdict> {
    // SAFETY (header reads): bounds checked by the caller's ptr_at and ptr_at.
    let ip = unsafe { &*ip };
    const IP_HLEN: usize = size_of::<Ipv6>();
    let l3 = l2.l3;
    if u32::from_be(ip.vtc_flow) >> 28 != 6 {
        return Err(Verdict::Drop(Counter::DropBadIpHeader));
    }
    let ip_len = IP_HLEN + u16::from_be(ip.payload_len) as usize;
    if l3 + ip_len > frame_len(ctx) {
        return Err(Verdict::Drop(Counter::DropIpLength));
    }
    let mut next = ip.next_header;
    let mut l4 = l3 + IP_HLEN;
    let bad_ext = Verdict::Drop(Counter::DropIpv6ExtHeaders);
    for _ in 0..MAX_IPV6_EXT {
        if next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS {
            break;
        }
        let ext = ptr_at::<Ipv6Ext>(ctx, l4).ok_or(bad_ext)?;
        // SAFETY: bounds checked by ptr_at.
        let (nh, len) = unsafe { ((*ext).next_header, (*ext).len) };
        next = nh;
        l4 += (len as usize + 1) * 8;
        if l4 > l3 + ip_len {
            return Err(bad_ext);
        }
    }
    match next {
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => return Err(bad_ext),
        IPPROTO_FRAGMENT => return Err(Verdict::Drop(Counter::DropFragment)),
        _ => {}
    }
    let mut pkt = Packet {
        ipv6: true,
        vlan: l2.vlan,
        l3,
        l4,
        ip_len,
        flow: FlowKey6 {
            src: ip.src,
            dst: ip.dst,
            sport: 0,
            dport: 0,
            proto: next,
            _pad: 0,
            _pad2: 0,
        },
        syn: false,
    };
    if next == IPPROTO_ICMPV6 {
        if let Some(icmp) = ptr_at::<Icmp>(ctx, l4) {
            // SAFETY: bounds checked by ptr_at.
            let ty = unsafe { (*icmp).ty };
            if (ND_FIRST..=ND_LAST).contains(&ty) {
                return Err(Verdict::Pass(Counter::PassIcmp));
            }
        }
        return Ok(L4::Icmp(pkt));
    }
    let (sport, dport, syn) = ports(ctx, next, l4, l3 + ip_len - l4)?;
    pkt.flow.sport = sport;
    pkt.flow.dport = dport;
    pkt.syn = syn;
    Ok(L4::Flow(pkt))
}

/// Ports and SYN of a TCP or UDP header at `l4` with `l4_len` bytes of IP payload from
/// there; another protocol passes as serviceless.
#[inline(always)]
fn ports(
    ctx: &XdpContext,
    proto: u8,
    l4: usize,
    l4_len: usize,
) -> Result<(u16, u16, bool), Verdict> {
    let truncated = Verdict::Drop(Counter::DropTruncatedL4);
    match proto {
        IPPROTO_TCP => {
            if l4_len < size_of::<Tcp>() {
                return Err(truncated);
            }
            let tcp = ptr_at::<Tcp>(ctx, l4).ok_or(truncated)?;
            // SAFETY: bounds checked by ptr_at.
            let tcp = unsafe { &*tcp };
            let data_offset = ((tcp.data_offset >> 4) as usize) * 4;
            if data_offset < size_of::<Tcp>() {
                return Err(Verdict::Drop(Counter::DropBadL4Header));
            }
            if data_offset > l4_len {
                return Err(truncated);
            }
            Ok((
                tcp.sport,
                tcp.dport,
                tcp.flags & (TCP_SYN | TCP_ACK) == TCP_SYN,
            ))
        }
        IPPROTO_UDP => {
            if l4_len < size_of::<Udp>() {
                return Err(truncated);
            }
            let udp = ptr_at::<Udp>(ctx, l4).ok_or(truncated)?;
            // SAFETY: bounds checked by ptr_at.
            let udp = unsafe { &*udp };
            let udp_len = u16::from_be(udp.len) as usize;
            if udp_len < size_of::<Udp>() {
                return Err(Verdict::Drop(Counter::DropBadL4Header));
            }
            if udp_len > l4_len {
                return Err(truncated);
            }
            Ok((udp.sport, udp.dport, false))
        }
        _ => Err(Verdict::Pass(Counter::PassNoService)),
    }
}
