//! Encapsulated frames, as the balancer's layer-3 modes send them: IP-in-IP (4in4, 6in6,
//! 4in6, 6in4) and GUE (variant 1: UDP then the inner IP header; variant 0 with a header).
//!
//! Outer headers follow the data plane's contract: IPv4 with DF set, TTL 64, id 0, ToS
//! copied from the inner packet and the checksum computed; IPv6 with hop limit 64 and the
//! traffic class copied; UDP checksum 0. The inner packet is an IP packet without Ethernet
//! (see [`ip_of`]). Fixtures corrupt fields by patching the returned bytes.

use std::net::IpAddr;

use crate::frame::{CLIENT_MAC, ETH_P_IPV6, checksum, ethernet};

/// IP protocol of IPv4 in IP.
pub const IPPROTO_IPIP: u8 = 4;
/// IP protocol of IPv6 in IP.
pub const IPPROTO_IPV6: u8 = 41;
/// IP protocol of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// Destination MAC of tunnelled frames (the backend's NIC).
pub const BACKEND_NIC_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 0, 0x01];

/// The IP packet of an Ethernet frame without a tag (what `FrameBuilder` and
/// `frame::ipv6_udp` build).
pub fn ip_of(frame: &[u8]) -> &[u8] {
    &frame[14..]
}

/// IP protocol number for carrying `inner` directly in IP: 4 for IPv4, 41 for IPv6.
pub fn ipip_proto(inner: &[u8]) -> u8 {
    match inner.first().map(|b| b >> 4) {
        Some(6) => IPPROTO_IPV6,
        _ => IPPROTO_IPIP,
    }
}

/// The inner packet's ToS / traffic class byte.
fn inner_tos(inner: &[u8]) -> u8 {
    match inner.first().map(|b| b >> 4) {
        Some(6) if inner.len() >= 2 => (inner[0] << 4) | (inner[1] >> 4),
        Some(4) if inner.len() >= 2 => inner[1],
        _ => 0,
    }
}

/// An outer IP header (family of `src`/`dst`) with protocol `proto` in front of `payload`.
/// `tos` is the ToS (IPv4) or traffic class (IPv6).
pub fn outer_ip(src: IpAddr, dst: IpAddr, proto: u8, tos: u8, payload: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[1] = tos;
            ip[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
            ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
            ip[8] = 64;
            ip[9] = proto;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let sum = checksum(&ip, 0);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            ip.extend_from_slice(payload);
            ip
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ip = vec![0u8; 8];
            ip[0] = 0x60 | (tos >> 4);
            ip[1] = tos << 4;
            ip[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
            ip[6] = proto;
            ip[7] = 64;
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            ip.extend_from_slice(payload);
            ip
        }
        _ => panic!("outer source {src} and destination {dst} are of different families"),
    }
}

/// IP-in-IP: `inner` behind an outer header from `src` to `dst`.
pub fn ipip(src: IpAddr, dst: IpAddr, inner: &[u8]) -> Vec<u8> {
    outer_ip(src, dst, ipip_proto(inner), inner_tos(inner), inner)
}

/// A UDP datagram (checksum 0) in an outer IP header.
pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, tos: u8, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    outer_ip(src, dst, IPPROTO_UDP, tos, &u)
}

/// GUE variant 1 (fou "direct"): UDP to `port`, then `inner`.
pub fn gue(src: IpAddr, dst: IpAddr, sport: u16, port: u16, inner: &[u8]) -> Vec<u8> {
    udp(src, dst, sport, port, inner_tos(inner), inner)
}

/// The 4-byte GUE variant 0 header without options: version 0, no control flag, hlen 0,
/// the inner protocol, flags 0.
pub fn gue_v0_header(inner: &[u8]) -> [u8; 4] {
    [0, ipip_proto(inner), 0, 0]
}

/// GUE variant 0: UDP to `port`, the 4-byte `header`, then `inner`.
pub fn gue_v0(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    port: u16,
    header: [u8; 4],
    inner: &[u8],
) -> Vec<u8> {
    let mut payload = header.to_vec();
    payload.extend_from_slice(inner);
    udp(src, dst, sport, port, inner_tos(inner), &payload)
}

/// An IPv6 UDP packet (no Ethernet) with its checksum, which IPv6 requires: the inner
/// packet of IPv6 lab traffic.
pub fn ipv6_udp_packet(
    src: std::net::SocketAddrV6,
    dst: std::net::SocketAddrV6,
    payload: &[u8],
) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut u = Vec::with_capacity(len as usize);
    u.extend_from_slice(&src.port().to_be_bytes());
    u.extend_from_slice(&dst.port().to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(40 + u.len());
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&u32::from(len).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, IPPROTO_UDP]);
    pseudo.extend_from_slice(&u);
    let sum = match checksum(&pseudo, 0) {
        0 => 0xffff,
        s => s,
    };
    u[6..8].copy_from_slice(&sum.to_be_bytes());
    outer_ip((*src.ip()).into(), (*dst.ip()).into(), IPPROTO_UDP, 0, &u)
}

/// An Ethernet frame to [`BACKEND_NIC_MAC`] carrying `packet`, EtherType by its version.
pub fn on_ethernet(packet: &[u8], vlan: Option<u16>) -> Vec<u8> {
    let ether_type = match packet.first().map(|b| b >> 4) {
        Some(6) => ETH_P_IPV6,
        _ => crate::frame::ETH_P_IP,
    };
    let mut f = ethernet(BACKEND_NIC_MAC, CLIENT_MAC, vlan, ether_type);
    f.extend_from_slice(packet);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_udp_checksum_verifies() {
        let p = ipv6_udp_packet(
            "[2001:db8::1]:1000".parse().unwrap(),
            "[2001:db8::2]:53".parse().unwrap(),
            b"who?",
        );
        let mut pseudo = p[8..40].to_vec();
        pseudo.extend_from_slice(&[0, 0, 0, 12, 0, 0, 0, 17]);
        pseudo.extend_from_slice(&p[40..]);
        assert_eq!(checksum(&pseudo, 0), 0);
    }

    #[test]
    fn outer_ipv4_checksum_verifies_and_tos_is_copied() {
        let inner = [
            0x45, 0xb8, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
        ];
        let p = ipip([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), &inner);
        assert_eq!(checksum(&p[..20], 0), 0);
        assert_eq!((p[1], p[9], &p[6..8]), (0xb8, 4, &[0x40, 0][..]));
        assert_eq!(&p[20..], &inner);
    }
}
