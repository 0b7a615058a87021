//! Frames for the layer-3 fixtures: outer IP headers, the frames a tunnel mode should
//! send for a given input, ICMP echo requests, and the ICMP errors a router sends (and
//! the balancer answers with). Built from the RFCs' field lists, independently of the
//! data plane, so a fixture comparing against them can fail. Outer headers and
//! encapsulation come from [`crate::frame_tunnel`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{
    frame::{CLIENT_MAC, ETH_P_IP, ETH_P_IPV6, checksum, ethernet},
    frame_tunnel::{gue, ip_of, ipip, outer_ip},
};

/// Bytes of the original packet an ICMP "too big" answer quotes (the program's bound).
pub const QUOTE: usize = 256;

/// How a fixture expects a frame to be encapsulated.
#[derive(Clone, Copy, Debug)]
pub struct Encap {
    /// Outer source and destination (same family).
    pub src: IpAddr,
    pub dst: IpAddr,
    /// GUE: UDP source and destination ports; `None` for IP-in-IP.
    pub udp: Option<(u16, u16)>,
    /// The outer IPv6 flow label (ignored for IPv4).
    pub label: u32,
    /// New Ethernet destination and source.
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
}

/// An untagged frame's IP packet (with any padding) and its IP version.
fn ip_and_version(frame: &[u8]) -> (&[u8], u8) {
    let ip = ip_of(frame);
    (ip, ip[0] >> 4)
}

/// The IP packet of an untagged frame, without Ethernet padding.
pub fn ip_packet(frame: &[u8]) -> &[u8] {
    let (ip, version) = ip_and_version(frame);
    let len = if version == 4 {
        usize::from(u16::from_be_bytes([ip[2], ip[3]]))
    } else {
        40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]))
    };
    &ip[..len]
}

/// The frame the balancer should send for the untagged `frame` in the tunnel `e`.
pub fn encapsulated(frame: &[u8], e: &Encap) -> Vec<u8> {
    let inner = ip_packet(frame);
    let mut packet = match e.udp {
        Some((sport, dport)) => gue(e.src, e.dst, sport, dport, inner),
        None => ipip(e.src, e.dst, inner),
    };
    let ether_type = if e.src.is_ipv4() {
        ETH_P_IP
    } else {
        let first = u32::from_be_bytes(packet[0..4].try_into().expect("4 bytes"));
        packet[0..4].copy_from_slice(&(first | (e.label & 0xfffff)).to_be_bytes());
        ETH_P_IPV6
    };
    let mut f = ethernet(e.dst_mac, e.src_mac, None, ether_type);
    f.extend_from_slice(&packet);
    // Any Ethernet padding of the input stays behind the packet.
    f.extend_from_slice(&frame[14 + inner.len()..]);
    f
}

/// The ICMPv6 checksum of `msg` between `src` and `dst`.
pub fn icmp6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + msg.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(msg);
    checksum(&pseudo, 0)
}

/// An ICMP / ICMPv6 message: type, code, the 4 bytes after the checksum, the body.
fn icmp_message(ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    m
}

/// An ICMP packet in an IPv4 or IPv6 frame from `src` to `dst`, checksums computed.
pub fn icmp_frame(
    src: IpAddr,
    dst: IpAddr,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    body: &[u8],
    macs: ([u8; 6], [u8; 6]),
) -> Vec<u8> {
    let mut msg = icmp_message(ty, code, rest, body);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let sum = checksum(&msg, 0);
            msg[2..4].copy_from_slice(&sum.to_be_bytes());
            let mut ip = outer_ip(s.into(), d.into(), 1, 0, &msg);
            // ICMP errors and echoes carry no DF here; the checksum follows.
            ip[6] = 0;
            ip[10] = 0;
            ip[11] = 0;
            let sum = checksum(&ip[..20], 0);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            let mut f = ethernet(macs.0, macs.1, None, ETH_P_IP);
            f.extend_from_slice(&ip);
            f
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let sum = icmp6_checksum(s, d, &msg);
            msg[2..4].copy_from_slice(&sum.to_be_bytes());
            let mut f = ethernet(macs.0, macs.1, None, ETH_P_IPV6);
            f.extend_from_slice(&outer_ip(s.into(), d.into(), 58, 0, &msg));
            f
        }
        _ => panic!("addresses of two families"),
    }
}

/// An echo request from the fixture client's MAC (`id`, `seq`, `data`).
pub fn echo_request(src: IpAddr, dst: IpAddr, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let ty = if src.is_ipv4() { 8 } else { 128 };
    let [a, b] = id.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    icmp_frame(
        src,
        dst,
        ty,
        0,
        [a, b, c, d],
        data,
        ([0x02, 0xb0, 0, 0, 0, 1], CLIENT_MAC),
    )
}

/// The echo reply the balancer should send for `request` (untagged): MACs and addresses
/// swapped, TTL / hop limit 64, type 0 / 129.
pub fn echo_reply(request: &[u8]) -> Vec<u8> {
    let (ip, version) = ip_and_version(request);
    let macs = (
        request[6..12].try_into().expect("6 bytes"),
        request[0..6].try_into().expect("6 bytes"),
    );
    if version == 4 {
        let (src, dst) = (v4_at(ip, 12), v4_at(ip, 16));
        let body = &ip_packet(request)[28..];
        let rest: [u8; 4] = ip[24..28].try_into().expect("4 bytes");
        let mut f = icmp_frame(dst.into(), src.into(), 0, ip[21], rest, body, macs);
        // The request's other IPv4 fields (id, flags) stay as they were.
        f[18..22].copy_from_slice(&ip[4..8]);
        f[24..26].copy_from_slice(&[0, 0]);
        let sum = checksum(&f[14..34], 0);
        f[24..26].copy_from_slice(&sum.to_be_bytes());
        f
    } else {
        let (src, dst) = (v6_at(ip, 8), v6_at(ip, 24));
        let body = &ip_packet(request)[48..];
        let rest: [u8; 4] = ip[44..48].try_into().expect("4 bytes");
        let mut f = icmp_frame(dst.into(), src.into(), 129, ip[41], rest, body, macs);
        // Traffic class and flow label as they came.
        f[14..18].copy_from_slice(&ip[0..4]);
        f
    }
}

/// The answer to an oversize `frame` (untagged): ICMP "fragmentation needed" / ICMPv6
/// "packet too big" with `mtu`, from the VIP (the frame's destination) back to its
/// source, quoting the first [`QUOTE`] bytes of the packet, MACs swapped.
pub fn too_big_answer(frame: &[u8], mtu: u16) -> Vec<u8> {
    let (ip, version) = ip_and_version(frame);
    let macs = (
        frame[6..12].try_into().expect("6 bytes"),
        frame[0..6].try_into().expect("6 bytes"),
    );
    let quote = &ip[..QUOTE];
    let rest = u32::from(mtu).to_be_bytes();
    if version == 4 {
        let (src, dst) = (v4_at(ip, 12), v4_at(ip, 16));
        let mut f = icmp_frame(dst.into(), src.into(), 3, 4, rest, quote, macs);
        f[20] = 0;
        f
    } else {
        let (src, dst) = (v6_at(ip, 8), v6_at(ip, 24));
        icmp_frame(dst.into(), src.into(), 2, 0, rest, quote, macs)
    }
}

/// What a router at `router` sends to the VIP about the backend's reply packet `reply`
/// (an IP packet from the VIP to a client): "fragmentation needed" / "packet too big"
/// with `mtu`, quoting the reply's first `quote` bytes.
pub fn router_too_big(router: IpAddr, reply: &[u8], mtu: u16, quote: usize) -> Vec<u8> {
    let rest = u32::from(mtu).to_be_bytes();
    let quote = &reply[..quote.min(reply.len())];
    let macs = ([0x02, 0xb0, 0, 0, 0, 1], CLIENT_MAC);
    if reply[0] >> 4 == 4 {
        icmp_frame(router, v4_at(reply, 12).into(), 3, 4, rest, quote, macs)
    } else {
        icmp_frame(router, v6_at(reply, 8).into(), 2, 0, rest, quote, macs)
    }
}

fn v4_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn v6_at(b: &[u8], at: usize) -> Ipv6Addr {
    let o: [u8; 16] = b[at..at + 16].try_into().expect("16 bytes");
    o.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp6_checksum_verifies() {
        let f = echo_request(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            1,
            2,
            b"ping",
        );
        let ip = &f[14..];
        assert_eq!(
            icmp6_checksum(v6_at(ip, 8), v6_at(ip, 24), &ip[40..]),
            0,
            "a message with its checksum sums to zero"
        );
    }
}
