//! Frames for packet fixtures: `FrameBuilder::tcp(src, dst).syn().vlan(7).build()`, IPv4
//! or IPv6 by the addresses' family.
//!
//! Checksums are computed, so a frame is exactly what a host would send; fields that
//! fixtures corrupt on purpose (total length, options, fragment bits, IPv6 extension
//! headers) have setters.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// IPv6 extension header numbers.
pub const IPV6_HOPOPTS: u8 = 0;
/// See [`IPV6_HOPOPTS`].
pub const IPV6_ROUTING: u8 = 43;
/// See [`IPV6_HOPOPTS`].
pub const IPV6_FRAGMENT: u8 = 44;
/// See [`IPV6_HOPOPTS`].
pub const IPV6_DSTOPTS: u8 = 60;
/// EtherType of 802.1Q.
pub const ETH_P_8021Q: u16 = 0x8100;
/// TCP flag bits.
pub const TCP_SYN: u8 = 0x02;
/// See [`TCP_SYN`].
pub const TCP_ACK: u8 = 0x10;
/// See [`TCP_SYN`].
pub const TCP_PSH: u8 = 0x08;

/// Source MAC of fixture clients.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x01];

#[derive(Clone, Copy, Debug)]
enum L4 {
    Tcp { flags: u8 },
    Udp,
}

/// Builds one Ethernet/IP/TCP-or-UDP frame; IPv6 when both ends are.
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    vlan: Option<u16>,
    src: SocketAddr,
    dst: SocketAddr,
    /// IPv6 extension headers: (type, length in 8-byte units beyond the first 8).
    ext: Vec<(u8, u8)>,
    l4: L4,
    payload: Vec<u8>,
    options: Vec<u8>,
    frag: u16,
    version_ihl: Option<u8>,
    total_len: Option<u16>,
}

impl FrameBuilder {
    fn new(src: SocketAddr, dst: SocketAddr, l4: L4) -> Self {
        Self {
            dst_mac: [0x02, 0xb0, 0, 0, 0, 0x01],
            src_mac: CLIENT_MAC,
            vlan: None,
            src,
            dst,
            ext: Vec::new(),
            l4,
            payload: Vec::new(),
            options: Vec::new(),
            frag: 0,
            version_ihl: None,
            total_len: None,
        }
    }

    /// A TCP segment with only ACK set (an established flow's packet).
    pub fn tcp(src: impl Into<SocketAddr>, dst: impl Into<SocketAddr>) -> Self {
        Self::new(src.into(), dst.into(), L4::Tcp { flags: TCP_ACK })
    }

    /// A UDP datagram.
    pub fn udp(src: impl Into<SocketAddr>, dst: impl Into<SocketAddr>) -> Self {
        Self::new(src.into(), dst.into(), L4::Udp)
    }

    /// Appends an IPv6 extension header of `kind` ([`IPV6_HOPOPTS`], ...) and
    /// `(len + 1) * 8` bytes (a Fragment header is always 8: `len` 0).
    pub fn ipv6_ext(mut self, kind: u8, len: u8) -> Self {
        self.ext.push((kind, len));
        self
    }

    /// Makes the TCP segment a SYN (no ACK).
    pub fn syn(mut self) -> Self {
        self.l4 = L4::Tcp { flags: TCP_SYN };
        self
    }

    /// Sets TCP flags.
    pub fn tcp_flags(mut self, flags: u8) -> Self {
        self.l4 = L4::Tcp { flags };
        self
    }

    /// Ethernet addresses.
    pub fn macs(mut self, dst: [u8; 6], src: [u8; 6]) -> Self {
        self.dst_mac = dst;
        self.src_mac = src;
        self
    }

    /// One 802.1Q tag.
    pub fn vlan(mut self, id: u16) -> Self {
        self.vlan = Some(id);
        self
    }

    /// Application bytes.
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// IPv4 options (padded to 4 bytes with end-of-options).
    pub fn ip_options(mut self, options: &[u8]) -> Self {
        self.options = options.to_vec();
        while !self.options.len().is_multiple_of(4) {
            self.options.push(0);
        }
        self
    }

    /// The IPv4 flags-and-fragment-offset field (e.g. `0x2000` = more fragments).
    pub fn fragment(mut self, frag: u16) -> Self {
        self.frag = frag;
        self
    }

    /// Overrides the IPv4 version/IHL byte.
    pub fn version_ihl(mut self, v: u8) -> Self {
        self.version_ihl = Some(v);
        self
    }

    /// Overrides the IPv4 total length, or the IPv6 payload length.
    pub fn total_len(mut self, len: u16) -> Self {
        self.total_len = Some(len);
        self
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let l4 = match self.l4 {
            L4::Tcp { flags } => {
                let mut h = vec![0u8; 20];
                h[0..2].copy_from_slice(&self.src.port().to_be_bytes());
                h[2..4].copy_from_slice(&self.dst.port().to_be_bytes());
                h[4..8].copy_from_slice(&1000u32.to_be_bytes());
                if flags & TCP_ACK != 0 {
                    h[8..12].copy_from_slice(&2000u32.to_be_bytes());
                }
                h[12] = 5 << 4;
                h[13] = flags;
                h[14..16].copy_from_slice(&64240u16.to_be_bytes());
                h.extend_from_slice(&self.payload);
                let sum = l4_checksum(self.src.ip(), self.dst.ip(), 6, &h);
                h[16..18].copy_from_slice(&sum.to_be_bytes());
                h
            }
            L4::Udp => {
                let mut h = vec![0u8; 8];
                h[0..2].copy_from_slice(&self.src.port().to_be_bytes());
                h[2..4].copy_from_slice(&self.dst.port().to_be_bytes());
                h[4..6].copy_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                h.extend_from_slice(&self.payload);
                let sum = l4_checksum(self.src.ip(), self.dst.ip(), 17, &h);
                h[6..8].copy_from_slice(&sum.to_be_bytes());
                h
            }
        };
        let proto = match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp => 17,
        };
        if let (IpAddr::V6(_), IpAddr::V6(_)) = (self.src.ip(), self.dst.ip()) {
            return self.build6(proto, l4);
        }
        let ihl = 20 + self.options.len();
        let mut ip = vec![0u8; 20];
        ip[0] = self.version_ihl.unwrap_or(0x40 | (ihl / 4) as u8);
        let total = self.total_len.unwrap_or((ihl + l4.len()) as u16);
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        ip[6..8].copy_from_slice(&self.frag.to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&v4(self.src.ip()).octets());
        ip[16..20].copy_from_slice(&v4(self.dst.ip()).octets());
        ip.extend_from_slice(&self.options);
        let sum = checksum(&ip, 0);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());

        let mut frame = ethernet(self.dst_mac, self.src_mac, self.vlan, ETH_P_IP);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&l4);
        frame
    }

    /// The IPv6 frame: header, extension headers in order, then `l4`.
    fn build6(&self, proto: u8, l4: Vec<u8>) -> Vec<u8> {
        let mut ext = Vec::new();
        for (i, (_, len)) in self.ext.iter().enumerate() {
            let next = self.ext.get(i + 1).map_or(proto, |(k, _)| *k);
            let mut h = vec![0u8; (usize::from(*len) + 1) * 8];
            h[0] = next;
            h[1] = *len;
            if self.ext[i].0 != IPV6_FRAGMENT && h.len() > 2 {
                // PadN over the rest, so the options are well formed.
                h[2] = 1;
                h[3] = (h.len() - 4) as u8;
            }
            ext.extend_from_slice(&h);
        }
        let mut ip = vec![0u8; 40];
        ip[0] = 0x60;
        let payload = self.total_len.unwrap_or((ext.len() + l4.len()) as u16);
        ip[4..6].copy_from_slice(&payload.to_be_bytes());
        ip[6] = self.ext.first().map_or(proto, |(k, _)| *k);
        ip[7] = 64;
        ip[8..24].copy_from_slice(&octets(self.src.ip()));
        ip[24..40].copy_from_slice(&octets(self.dst.ip()));
        let mut frame = ethernet(self.dst_mac, self.src_mac, self.vlan, ETH_P_IPV6);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&ext);
        frame.extend_from_slice(&l4);
        frame
    }
}

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

/// An address's bytes: 4 for IPv4, 16 for IPv6.
fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// An Ethernet header with an optional 802.1Q tag.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>, ether_type: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(id) = vlan {
        f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        f.extend_from_slice(&(id & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

/// An ARP request for `target` from `sender`.
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = ethernet([0xff; 6], CLIENT_MAC, None, 0x0806);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// A minimal IPv6 frame (UDP, empty payload) to `dst`.
pub fn ipv6_udp(dst: [u8; 16]) -> Vec<u8> {
    let mut f = ethernet([0x02, 0xb0, 0, 0, 0, 1], CLIENT_MAC, None, 0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 64]);
    f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 8, 0, 0]);
    f
}

fn l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&octets(src));
    pseudo.extend_from_slice(&octets(dst));
    if src.is_ipv6() {
        pseudo.extend_from_slice(&(segment.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, proto]);
    } else {
        pseudo.push(0);
        pseudo.push(proto);
        pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    }
    checksum(segment, sum_words(&pseudo))
}

fn sum_words(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum()
}

/// The Internet checksum of `data`, starting from a partial sum.
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial + sum_words(data);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        let f = FrameBuilder::tcp(
            "10.0.0.1:1234".parse::<SocketAddr>().unwrap(),
            "10.0.0.2:80".parse::<SocketAddr>().unwrap(),
        )
        .payload(b"hello")
        .build();
        assert_eq!(checksum(&f[14..34], 0), 0, "IPv4 header checksum");
        assert_eq!(
            l4_checksum([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), 6, &f[34..]),
            0,
            "TCP checksum"
        );
    }

    #[test]
    fn ipv6_checksum_verifies_and_ext_headers_chain() {
        let src: SocketAddr = "[2001:db8::1]:1234".parse().unwrap();
        let dst: SocketAddr = "[2001:db8::2]:80".parse().unwrap();
        let f = FrameBuilder::udp(src, dst)
            .ipv6_ext(IPV6_HOPOPTS, 0)
            .ipv6_ext(IPV6_DSTOPTS, 1)
            .payload(b"hi")
            .build();
        assert_eq!(u16::from_be_bytes([f[12], f[13]]), ETH_P_IPV6);
        assert_eq!(f[14 + 6], IPV6_HOPOPTS, "first next header");
        assert_eq!(
            f[54], IPV6_DSTOPTS,
            "hop-by-hop names the destination options"
        );
        assert_eq!(f[62], 17, "destination options name UDP");
        let udp = &f[54 + 8 + 16..];
        assert_eq!(u16::from_be_bytes([f[18], f[19]]) as usize, 24 + udp.len());
        assert_eq!(l4_checksum(src.ip(), dst.ip(), 17, udp), 0, "UDP checksum");
    }
}
