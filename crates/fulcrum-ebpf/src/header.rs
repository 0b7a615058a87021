//! The only place that turns packet offsets into pointers, the header layouts and the
//! protocol numbers, shared by every program (the balancer, the decapsulator).
//!
//! Headers are declared with 16- and 32-bit fields (network byte order) rather than byte
//! arrays, so reading an address or a port is one load, not four loads and shifts. x86
//! and arm64 load unaligned packet data fine, and the verifier only insists on alignment
//! under `BPF_F_STRICT_ALIGNMENT`.

use core::mem::size_of;

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
pub use fulcrum_common::{IPPROTO_TCP, IPPROTO_UDP};

/// EtherType IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// EtherType of an 802.1Q tag.
pub const ETH_P_8021Q: u16 = 0x8100;

/// ICMP (IPv4).
pub const IPPROTO_ICMP: u8 = 1;
/// IPv4 in IP (IP-in-IP).
pub const IPPROTO_IPIP: u8 = 4;
/// IPv6 in IP.
pub const IPPROTO_IPV6: u8 = 41;
/// ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 Hop-by-Hop Options extension header.
pub const IPPROTO_HOPOPTS: u8 = 0;
/// IPv6 Routing extension header.
pub const IPPROTO_ROUTING: u8 = 43;
/// IPv6 Fragment extension header.
pub const IPPROTO_FRAGMENT: u8 = 44;
/// IPv6 Destination Options extension header.
pub const IPPROTO_DSTOPTS: u8 = 60;
/// IPv6 "no next header".
pub const IPPROTO_NONE: u8 = 59;

/// IPv4 flags and fragment offset bits that mark a fragment (MF and the offset; DF excluded).
pub const IPV4_MF_AND_OFFSET: u16 = 0x3fff;
/// IPv4 "don't fragment" bit.
pub const IPV4_DF: u16 = 0x4000;

/// A pointer to a `T` at `off` bytes into the frame, if the whole `T` lies inside it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + off + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *mut T)
}

/// Grows (`delta` < 0) or shrinks (`delta` > 0) the frame at its head. Every pointer into the
/// frame is stale afterwards: derive them again with [`ptr_at`].
#[inline(always)]
#[expect(
    clippy::result_unit_err,
    reason = "the helper's only failure is \"no room\"; callers map it to their own counter"
)]
pub fn adjust_head(ctx: &XdpContext, delta: i32) -> Result<(), ()> {
    // SAFETY: the helper only needs the context the program was called with.
    let ret = unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) };
    if ret == 0 { Ok(()) } else { Err(()) }
}

/// Frame length in bytes.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

/// Ethernet header.
#[repr(C)]
pub struct Eth {
    /// Destination then source MAC.
    pub macs: [u16; 6],
    pub ether_type: u16,
}

/// The two MACs of an Ethernet header as three words, for rewriting them in three stores.
pub type Macs = [u32; 3];

/// An 802.1Q tag, after the outer EtherType.
#[repr(C)]
pub struct Vlan {
    pub tci: u16,
    pub ether_type: u16,
}

/// IPv4 header without options.
#[repr(C)]
pub struct Ipv4 {
    pub version_ihl: u8,
    pub tos: u8,
    pub total_len: u16,
    pub id: u16,
    pub frag: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub src: u32,
    pub dst: u32,
}

/// IPv6 fixed header.
#[repr(C)]
pub struct Ipv6 {
    /// Version (4 bits), traffic class (8), flow label (20).
    pub vtc_flow: u32,
    pub payload_len: u16,
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
}

/// The first 8 bytes of a Hop-by-Hop, Routing or Destination Options header; its length is
/// `(len + 1) * 8` bytes.
#[repr(C)]
pub struct Ipv6Ext {
    pub next_header: u8,
    pub len: u8,
    pub _rest: [u8; 6],
}

/// IPv6 Fragment extension header.
#[repr(C)]
pub struct Ipv6Frag {
    pub next_header: u8,
    pub _reserved: u8,
    /// Offset (13 bits), reserved (2), M flag (1).
    pub frag_off: u16,
    pub id: u32,
}

/// ICMP or ICMPv6 header; `rest` is the type-specific word (echo id/sequence, MTU).
#[repr(C)]
pub struct Icmp {
    pub ty: u8,
    pub code: u8,
    pub check: u16,
    pub rest: u32,
}

/// GUE header (variant 0): version (2 bits), C flag (1), header length in words (5); the
/// inner protocol (or control type); flags.
#[repr(C)]
pub struct GueHeader {
    pub flags_hlen: u8,
    pub proto: u8,
    pub flags: u16,
}

/// TCP header without options.
#[repr(C)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack_seq: u32,
    pub data_offset: u8,
    pub flags: u8,
    pub window: u16,
    pub check: u16,
    pub urgent: u16,
}

/// UDP header.
#[repr(C)]
pub struct Udp {
    pub sport: u16,
    pub dport: u16,
    pub len: u16,
    pub check: u16,
}

/// TCP flag bits.
pub const TCP_SYN: u8 = 0x02;
/// See [`TCP_SYN`].
pub const TCP_ACK: u8 = 0x10;

const _: () = assert!(size_of::<Eth>() == 14);
const _: () = assert!(size_of::<Vlan>() == 4);
const _: () = assert!(size_of::<Ipv4>() == 20);
const _: () = assert!(size_of::<Tcp>() == 20);
const _: () = assert!(size_of::<Udp>() == 8);
const _: () = assert!(size_of::<Ipv6>() == 40);
const _: () = assert!(size_of::<Ipv6Ext>() == 8);
const _: () = assert!(size_of::<Ipv6Frag>() == 8);
const _: () = assert!(size_of::<Icmp>() == 8);
const _: () = assert!(size_of::<GueHeader>() == 4);
