//! The only place that turns packet offsets into pointers, and the header layouts.
//!
//! Headers are declared with 16- and 32-bit fields (network byte order) rather than byte
//! arrays, so reading an address or a port is one load, not four loads and shifts. x86
//! and arm64 load unaligned packet data fine, and the verifier only insists on alignment
//! under `BPF_F_STRICT_ALIGNMENT`.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;

/// A pointer to a `T` at `off` bytes into the frame, if the whole `T` lies inside it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + off + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *mut T)
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
