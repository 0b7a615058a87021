//! Frames for the fuzzer: a seeded PRNG, a corpus of valid frames, and mutations of them
//! aimed at every rule (lengths, header lengths, fragment bits, options, VLAN tags,
//! EtherTypes, TCP data offsets, UDP lengths, IPv6 payload lengths, next headers and
//! extension headers), plus plain random bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use fulcrum_lab::{
    fixture::{CLIENT, CLIENT6, VIP, VIP_ALL_PORTS, VIP_EMPTY, VIP6},
    frame::{FrameBuilder, IPV6_DSTOPTS, IPV6_HOPOPTS, IPV6_ROUTING, TCP_ACK, TCP_PSH},
    frame_l3::{ip_packet, router_too_big},
};

use crate::tunnel::{VIP_TUNNEL, VIP6_TUNNEL};

/// splitmix64: tiny, seedable, good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }
}

/// Valid frames: to every kind of service, to no service, to no VIP, with and without a
/// VLAN tag. A few client ports only, so flows repeat and hit the flow table.
pub fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let host = Ipv4Addr::new(10, 88, 0, 1);
    for vlan in [None, Some(7)] {
        for (vip, port) in [
            (VIP, 80),
            (VIP, 81),
            (VIP_ALL_PORTS, 4443),
            (VIP_EMPTY, 80),
            (host, 22),
        ] {
            for sport in [40000, 40001] {
                let src = SocketAddrV4::new(CLIENT, sport);
                let dst = SocketAddrV4::new(vip, port);
                let tag = |b: FrameBuilder| match vlan {
                    Some(id) => b.vlan(id),
                    None => b,
                };
                out.push(tag(FrameBuilder::tcp(src, dst).syn()).build());
                out.push(tag(FrameBuilder::tcp(src, dst)).build());
                out.push(
                    tag(FrameBuilder::tcp(src, dst)
                        .tcp_flags(TCP_ACK | TCP_PSH)
                        .payload(b"GET / HTTP/1.1\r\n\r\n"))
                    .build(),
                );
            }
        }
        // IPv6: the web and DNS services, another port, with and without extension headers.
        for (port, sport) in [(80, 40000), (80, 40001), (81, 40000)] {
            let src = SocketAddrV6::new(CLIENT6, sport, 0, 0);
            let dst = SocketAddrV6::new(VIP6, port, 0, 0);
            let tag = |b: FrameBuilder| match vlan {
                Some(id) => b.vlan(id),
                None => b,
            };
            out.push(tag(FrameBuilder::tcp(src, dst).syn()).build());
            out.push(tag(FrameBuilder::tcp(src, dst)).build());
            out.push(
                tag(FrameBuilder::tcp(src, dst)
                    .ipv6_ext(IPV6_HOPOPTS, 0)
                    .ipv6_ext(IPV6_DSTOPTS, 1))
                .build(),
            );
            out.push(
                tag(FrameBuilder::udp(src, SocketAddrV6::new(VIP6, 53, 0, 0))
                    .ipv6_ext(IPV6_ROUTING, 0)
                    .payload(b"query"))
                .build(),
            );
        }
        for (vip, port) in [(VIP, 53), (VIP, 54), (VIP_ALL_PORTS, 53)] {
            let src = SocketAddrV4::new(CLIENT, 50000);
            let dst = SocketAddrV4::new(vip, port);
            let b = FrameBuilder::udp(src, dst).payload(b"query");
            out.push(
                match vlan {
                    Some(id) => b.vlan(id),
                    None => b,
                }
                .build(),
            );
        }
        tunnelled(&mut out, vlan);
    }
    out
}

/// For the tunnelled services (`main.rs`): small packets, packets that just fit their
/// backends' MTU once encapsulated and ones a byte or more over it (IPv4 with and without
/// DF), a non-zero ToS / traffic class, and ICMP "too big" errors about their flows' (and
/// the L2 services') replies.
fn tunnelled(out: &mut Vec<Vec<u8>>, vlan: Option<u16>) {
    let tag = |b: FrameBuilder| match vlan {
        Some(id) => b.vlan(id),
        None => b,
    };
    let client = |v6: bool, port: u16| -> SocketAddr {
        if v6 {
            SocketAddrV6::new(CLIENT6, port, 0, 0).into()
        } else {
            SocketAddrV4::new(CLIENT, port).into()
        }
    };
    let vip = |v6: bool, port: u16| -> SocketAddr {
        if v6 {
            SocketAddrV6::new(VIP6_TUNNEL, port, 0, 0).into()
        } else {
            SocketAddrV4::new(VIP_TUNNEL, port).into()
        }
    };
    // (IPv6, port, TCP, payload sizes around the oversize rule's edges).
    let services: [(bool, u16, bool, &[usize]); 5] = [
        (false, 80, true, &[540, 541]),         // 4in4, room 580
        (false, 53, false, &[544, 545]),        // GUE 4in4, room 572
        (false, 443, true, &[1220, 1221]),      // 4in6, room 1260
        (true, 80, true, &[1200, 1201, 1221]),  // 6in6: room 1260, drop to 1280
        (true, 53, false, &[1204, 1205, 1233]), // GUE 6in6: room 1252, drop to 1280
    ];
    for (v6, port, tcp, sizes) in services {
        for sport in [41000, 41001] {
            let (src, dst) = (client(v6, sport), vip(v6, port));
            let b = if tcp {
                FrameBuilder::tcp(src, dst)
            } else {
                FrameBuilder::udp(src, dst)
            };
            if tcp {
                out.push(tag(b.clone().syn()).build());
            }
            out.push(tag(b.clone().payload(b"GET / HTTP/1.1\r\n\r\n")).build());
            let mut tos = tag(b.clone().payload(b"tos")).build();
            let l3 = if vlan.is_some() { 18 } else { 14 };
            if v6 {
                tos[l3] = 0x6b; // traffic class 0xb8
                tos[l3 + 1] = 0x80;
            } else {
                tos[l3 + 1] = 0xb8; // the reference reads no IPv4 checksum
            }
            out.push(tos);
            if sport != 41000 {
                continue;
            }
            for size in sizes {
                let big = b.clone().payload(&vec![0x5a; *size]);
                out.push(tag(big.clone().fragment(0x4000)).build());
                if !v6 {
                    out.push(tag(big).build());
                }
            }
        }
    }
    // "Too big" from a router about replies of flows of a tunnel and an L2 service, one
    // quoting enough to be too big to tunnel itself.
    let router4 = IpAddr::V4(Ipv4Addr::new(10, 88, 7, 1));
    let router6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x88, 7, 0, 0, 0, 1));
    let replies: [(SocketAddr, IpAddr, usize); 6] = [
        (vip(false, 80), router4, 64),
        (vip(false, 443), router4, 64),
        (vip(true, 80), router6, 64),
        (vip(true, 80), router6, 1276),
        (SocketAddrV4::new(VIP, 80).into(), router4, 64),
        (SocketAddrV6::new(VIP6, 80, 0, 0).into(), router6, 64),
    ];
    for (from, router, quote) in replies {
        let to = client(from.is_ipv6(), 41000);
        let reply = FrameBuilder::tcp(from, to).payload(&[1u8; 1400]).build();
        let mut icmp = router_too_big(router, ip_packet(&reply), 1280, quote);
        if let Some(id) = vlan {
            let mut t = vec![0x81, 0x00];
            t.extend_from_slice(&id.to_be_bytes());
            icmp.splice(12..12, t);
        }
        out.push(icmp);
    }
}

/// The shortest frame BPF_PROG_TEST_RUN takes for XDP (and a NIC delivers).
pub const ETH_HLEN: usize = 14;

/// Offset of the IPv4 header, if the frame's EtherTypes say there is one.
fn l3_of(f: &[u8]) -> usize {
    if f.len() >= 18 && f[12] == 0x81 && f[13] == 0 {
        18
    } else {
        14
    }
}

fn set16(f: &mut [u8], at: usize, v: u16) {
    if at + 2 <= f.len() {
        f[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

/// One mutated or random frame.
pub fn mutant(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    if rng.chance(16) {
        let len = ETH_HLEN + rng.below(100);
        return (0..len).map(|_| rng.byte()).collect();
    }
    let mut f = rng.pick(corpus).clone();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        mutate_once(rng, &mut f);
    }
    f.truncate(MAX_FRAME);
    f
}

/// The longest frame fuzzed: one buffer, as a NIC delivers it. BPF_PROG_TEST_RUN puts the
/// bytes past about 3.5 KiB (a page less headroom and tail room) in fragments, which the
/// program, not loaded for multi-buffer XDP, does not see.
const MAX_FRAME: usize = 3072;

/// IPv6 mutations: payload length, next headers, extension headers added or cut.
fn mutate6(rng: &mut Rng, f: &mut Vec<u8>, l3: usize) {
    let l4 = l3 + 40;
    match rng.below(5) {
        0 => {
            let truth = f.len().saturating_sub(l4) as i64;
            let v = if rng.chance(2) {
                (truth + rng.below(17) as i64 - 8).clamp(0, 0xffff) as u16
            } else {
                rng.next() as u16
            };
            set16(f, l3 + 4, v);
        }
        1 => {
            if l3 + 6 < f.len() {
                let any = rng.byte();
                f[l3 + 6] = *rng.pick(&[0, 6, 17, 43, 44, 58, 59, 60, any]);
            }
        }
        // Another extension header in front, the lengths kept consistent (or not).
        2 => {
            if f.len() >= l4 {
                let len = if rng.chance(4) {
                    rng.byte()
                } else {
                    rng.below(3) as u8
                };
                let any = rng.byte();
                let kind = *rng.pick(&[0u8, 43, 60, 44, any]);
                let mut h = vec![0u8; (usize::from(len) + 1) * 8];
                h[0] = f[l3 + 6];
                h[1] = len;
                let add = h.len().min(1024);
                h.truncate(add);
                f.splice(l4..l4, h);
                f[l3 + 6] = kind;
                let payload = u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]);
                if !rng.chance(4) {
                    set16(f, l3 + 4, payload.wrapping_add(add as u16));
                }
            }
        }
        // ICMPv6, ND or not.
        3 => {
            if l4 < f.len() {
                f[l3 + 6] = 58;
                let any = rng.byte();
                f[l4] = *rng.pick(&[128, 129, 133, 134, 135, 136, 137, 2, any]);
            }
        }
        _ => {
            if f.len() > l3 {
                let at = l3 + rng.below(f.len() - l3);
                f[at] ^= 1 << rng.below(8);
            }
        }
    }
}

fn mutate_once(rng: &mut Rng, f: &mut Vec<u8>) {
    let l3 = l3_of(f);
    if f.len() >= l3 && f[l3 - 2..l3] == [0x86, 0xdd] && rng.chance(2) {
        mutate6(rng, f, l3);
        return;
    }
    let l4 = l3 + 20;
    match rng.below(16) {
        // Bit flips anywhere, mostly in the headers.
        0 | 1 => {
            let span = if rng.chance(2) {
                f.len().min(l4 + 20)
            } else {
                f.len()
            };
            for _ in 0..1 + rng.below(3) {
                if span > 0 {
                    let at = rng.below(span);
                    f[at] ^= 1 << rng.below(8);
                }
            }
        }
        // Bit flips past the EtherType: IPv4 fields, ports, payload.
        14 => {
            if f.len() > l3 {
                let at = l3 + rng.below(f.len() - l3);
                f[at] ^= 1 << rng.below(8);
            }
        }
        // Another client: a source address or port never seen, so a new flow.
        15 => {
            let at = if rng.chance(2) {
                l3 + 12 + rng.below(4)
            } else {
                l4 + rng.below(2)
            };
            if at < f.len() {
                f[at] = rng.byte();
            }
        }
        // Truncation.
        2 => {
            let len = ETH_HLEN + rng.below(f.len().saturating_sub(ETH_HLEN) + 1);
            f.truncate(len);
        }
        // IPv4 total length: near the truth or anything.
        3 => {
            let truth = f.len().saturating_sub(l3) as i64;
            let v = if rng.chance(2) {
                (truth + rng.below(9) as i64 - 4).clamp(0, 0xffff) as u16
            } else {
                rng.next() as u16
            };
            set16(f, l3 + 2, v);
        }
        // Version and IHL.
        4 => {
            if l3 < f.len() {
                f[l3] = if rng.chance(2) {
                    0x40 | rng.below(16) as u8
                } else {
                    rng.byte()
                };
            }
        }
        // Fragment bits and offset.
        5 => {
            let v = *rng.pick(&[0x2000, 0x4000, 0x0001, 0x1fff, 0x6000, 0x8000]) as u16;
            set16(f, l3 + 6, if rng.chance(4) { rng.next() as u16 } else { v });
        }
        // IPv4 options, with IHL and total length that agree (or not).
        6 => {
            if f.len() >= l4 {
                let words = 1 + rng.below(10);
                let opts: Vec<u8> = (0..words * 4).map(|_| rng.byte()).collect();
                f.splice(l4..l4, opts);
                f[l3] = 0x40 | (5 + words) as u8;
                let total = u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]);
                if !rng.chance(4) {
                    set16(f, l3 + 2, total.wrapping_add(words as u16 * 4));
                }
            }
        }
        // Another VLAN tag (stacked, or QinQ's 0x88a8 outside).
        7 => {
            if f.len() >= 14 {
                let outer = *rng.pick(&[0x8100u16, 0x8100, 0x88a8, 0x9100]);
                let mut tag = outer.to_be_bytes().to_vec();
                tag.extend_from_slice(&(rng.next() as u16 & 0x0fff).to_be_bytes());
                f.splice(12..12, tag);
            }
        }
        // Odd EtherTypes, outer or inner.
        8 => {
            let et = *rng.pick(&[0x0000u16, 0xffff, 0x86dd, 0x0806, 0x88a8, 0x0801, 0x0600]);
            let at = if rng.chance(2) { 12 } else { l3 - 2 };
            set16(f, at, if rng.chance(3) { rng.next() as u16 } else { et });
        }
        // TCP data offset, below 5 included.
        9 => {
            if l4 + 12 < f.len() {
                f[l4 + 12] = (rng.below(16) as u8) << 4 | (f[l4 + 12] & 0x0f);
            }
        }
        // UDP length.
        10 => {
            let v = if rng.chance(2) {
                rng.below(40) as u16
            } else {
                rng.next() as u16
            };
            set16(f, l4 + 4, v);
        }
        // Protocol.
        11 => {
            if l3 + 9 < f.len() {
                f[l3 + 9] = *rng.pick(&[1u8, 6, 17, 47, 58, 132, 0, 255]);
            }
        }
        // TCP flags.
        12 => {
            if l4 + 13 < f.len() {
                f[l4 + 13] = rng.byte();
            }
        }
        // Ethernet padding or trailing garbage.
        _ => {
            for _ in 0..rng.below(32) {
                f.push(rng.byte());
            }
        }
    }
}
