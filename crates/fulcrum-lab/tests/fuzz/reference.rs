//! What the documented rules (README's table, the top of `fulcrum-ebpf/src/main.rs`) say
//! a frame gets, computed from its bytes alone: an independent reading of the rules,
//! sharing no code with the program.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fulcrum::Counter;

use crate::tunnel::{self, Tun};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
const ICMP: u8 = 1;

/// A configured service, as the reference sees it.
#[derive(Debug, PartialEq, Eq)]
pub struct Svc {
    pub vip: IpAddr,
    /// 0: every port.
    pub port: u16,
    pub proto: u8,
    /// Fixture backend numbers; empty: no usable backend.
    pub backends: &'static [u8],
    /// `None`: L2 DSR.
    pub tunnel: Option<Tun>,
}

/// A flow's identity, in host order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// Where the IP packet of a frame is: what a tunnel carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inner {
    /// Offset of the IP header.
    pub l3: usize,
    /// IP length (header and payload, no Ethernet padding).
    pub len: usize,
    pub v6: bool,
}

/// What must happen to a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Handed to the kernel untouched, for this reason.
    Pass(Counter),
    /// Dropped untouched, for this reason.
    Drop(Counter),
    /// Sent to one of the service's backends: only the MACs rewritten (L2 DSR), or
    /// encapsulated (`tunnel`).
    Forward {
        svc: &'static Svc,
        tuple: Tuple,
        /// TCP SYN without ACK.
        syn: bool,
        inner: Inner,
    },
    /// A tunnelled service's packet that does not fit its backends' MTU once
    /// encapsulated: answered with exactly `answer`, or dropped (`None`); `icmp`: an
    /// ICMP error about `tuple`'s flow, which pins nothing (`tunnel`).
    Oversize {
        svc: &'static Svc,
        tuple: Tuple,
        answer: Option<Vec<u8>>,
        icmp: bool,
        /// TCP SYN without ACK.
        syn: bool,
    },
    /// Answered in place (`XDP_TX`) with exactly this frame, for this reason (`l3`).
    Reply { frame: Vec<u8>, reason: Counter },
    /// An ICMP error about `tuple`'s flow, sent to its backend as the service forwards
    /// (`l3`).
    ForwardIcmp {
        svc: &'static Svc,
        tuple: Tuple,
        inner: Inner,
    },
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn addr(f: &[u8], at: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]))
}

fn addr6(f: &[u8], at: usize) -> IpAddr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&f[at..at + 16]);
    IpAddr::V6(Ipv6Addr::from(o))
}

/// The rules, in the order they apply.
pub fn classify(f: &[u8], services: &'static [Svc]) -> Expected {
    use Counter::*;
    use Expected::Pass;
    if f.len() < 14 {
        return Pass(PassMalformedL2);
    }
    let mut ether_type = be16(f, 12);
    let mut l3 = 14;
    if ether_type == 0x8100 {
        if f.len() < 18 {
            return Pass(PassMalformedL2);
        }
        ether_type = be16(f, 16);
        l3 = 18;
    }
    match ether_type {
        0x0800 => ipv4(f, l3, services),
        0x86dd => ipv6(f, l3, services),
        _ => Pass(PassNotIp),
    }
}

fn ipv4(f: &[u8], l3: usize, services: &'static [Svc]) -> Expected {
    use Counter::*;
    use Expected::{Drop, Pass};
    if f.len() < l3 + 20 {
        return Pass(PassMalformedIp);
    }
    let dst = addr(f, l3 + 16);
    if !services.iter().any(|s| s.vip == dst) {
        return Pass(PassNotVip);
    }
    let version = f[l3] >> 4;
    let ihl = usize::from(f[l3] & 0x0f) * 4;
    let total = usize::from(be16(f, l3 + 2));
    if version != 4 || ihl < 20 || total < ihl {
        return Drop(DropBadIpHeader);
    }
    if l3 + total > f.len() {
        return Drop(DropIpLength);
    }
    if be16(f, l3 + 6) & 0x3fff != 0 {
        return Drop(DropFragment);
    }
    if ihl != 20 {
        return Drop(DropIpOptions);
    }
    let proto = f[l3 + 9];
    if proto == ICMP {
        return crate::l3::icmp(f, l3, l3 + 20, total, false, services);
    }
    let inner = Inner {
        l3,
        len: total,
        v6: false,
    };
    transport(f, services, addr(f, l3 + 12), dst, proto, l3 + 20, inner)
}

/// IPv6: Hop-by-Hop, Routing and Destination Options skipped, at most 4; a Fragment
/// header drops; ICMPv6 (ND or not) passes.
fn ipv6(f: &[u8], l3: usize, services: &'static [Svc]) -> Expected {
    use Counter::*;
    use Expected::{Drop, Pass};
    const SKIPPED: [u8; 3] = [0, 43, 60];
    if f.len() < l3 + 40 {
        return Pass(PassMalformedIp);
    }
    let dst = addr6(f, l3 + 24);
    if !services.iter().any(|s| s.vip == dst) {
        return Pass(PassNotVip);
    }
    if f[l3] >> 4 != 6 {
        return Drop(DropBadIpHeader);
    }
    let ip_len = 40 + usize::from(be16(f, l3 + 4));
    if l3 + ip_len > f.len() {
        return Drop(DropIpLength);
    }
    let mut next = f[l3 + 6];
    let mut l4 = l3 + 40;
    for _ in 0..4 {
        if !SKIPPED.contains(&next) {
            break;
        }
        if l4 + 8 > f.len() {
            return Drop(DropIpv6ExtHeaders);
        }
        next = f[l4];
        l4 += (usize::from(f[l4 + 1]) + 1) * 8;
        if l4 > l3 + ip_len {
            return Drop(DropIpv6ExtHeaders);
        }
    }
    if SKIPPED.contains(&next) {
        return Drop(DropIpv6ExtHeaders);
    }
    if next == 44 {
        return Drop(DropFragment);
    }
    if next == 58 {
        // ND is told by a whole ICMPv6 header; anything shorter is cut short (`l3`).
        if l4 + 8 <= f.len() && (133..=137).contains(&f[l4]) {
            return Pass(PassIcmp);
        }
        return crate::l3::icmp(f, l3, l4, ip_len, true, services);
    }
    let inner = Inner {
        l3,
        len: ip_len,
        v6: true,
    };
    transport(f, services, addr6(f, l3 + 8), dst, next, l4, inner)
}

/// TCP or UDP at `l4` in the IP packet `inner`, of either family.
fn transport(
    f: &[u8],
    services: &'static [Svc],
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    l4: usize,
    inner: Inner,
) -> Expected {
    use Counter::*;
    use Expected::{Drop, Pass};
    let l4_len = inner.l3 + inner.len - l4;
    let syn = match proto {
        TCP => {
            if l4_len < 20 {
                return Drop(DropTruncatedL4);
            }
            let data_offset = usize::from(f[l4 + 12] >> 4) * 4;
            if data_offset < 20 {
                return Drop(DropBadL4Header);
            }
            if data_offset > l4_len {
                return Drop(DropTruncatedL4);
            }
            f[l4 + 13] & 0x12 == 0x02
        }
        UDP => {
            if l4_len < 8 {
                return Drop(DropTruncatedL4);
            }
            let udp_len = usize::from(be16(f, l4 + 4));
            if udp_len < 8 {
                return Drop(DropBadL4Header);
            }
            if udp_len > l4_len {
                return Drop(DropTruncatedL4);
            }
            false
        }
        _ => return Pass(PassNoService),
    };
    let tuple = Tuple {
        src,
        dst,
        sport: be16(f, l4),
        dport: be16(f, l4 + 2),
        proto,
    };
    let find = |port: u16| {
        services
            .iter()
            .find(|s| s.vip == dst && s.proto == proto && s.port == port)
    };
    let Some(svc) = find(tuple.dport).or_else(|| find(0)) else {
        return Pass(PassNoService);
    };
    if svc.backends.is_empty() {
        return Drop(DropNoBackend);
    }
    if let Some(t) = &svc.tunnel
        && let Some(answer) = tunnel::oversize(f, inner, t)
    {
        return Expected::Oversize {
            svc,
            tuple,
            answer,
            icmp: false,
            syn,
        };
    }
    Expected::Forward {
        svc,
        tuple,
        syn,
        inner,
    }
}
