//! What the documented rules (README's table, the top of `fulcrum-ebpf/src/main.rs`) say
//! a frame gets, computed from its bytes alone: an independent reading of the rules,
//! sharing no code with the program.

use std::net::Ipv4Addr;

use fulcrum::Counter;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
const ICMP: u8 = 1;

/// A configured service, as the reference sees it.
pub struct Svc {
    pub vip: Ipv4Addr,
    /// 0: every port.
    pub port: u16,
    pub proto: u8,
    /// Fixture backend numbers; empty: no usable backend.
    pub backends: &'static [u8],
}

/// A flow's identity, in host order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// What must happen to a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Handed to the kernel untouched, for this reason.
    Pass(Counter),
    /// Dropped untouched, for this reason.
    Drop(Counter),
    /// Sent to one of `backends` with only the MACs rewritten.
    Forward {
        backends: &'static [u8],
        tuple: Tuple,
        /// TCP SYN without ACK.
        syn: bool,
    },
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn addr(f: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3])
}

/// The rules, in the order they apply.
pub fn classify(f: &[u8], services: &[Svc]) -> Expected {
    use Counter::*;
    use Expected::{Drop, Pass};
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
    if ether_type == 0x86dd {
        // No IPv6 services in this model yet: every IPv6 destination is another host's.
        if f.len() < l3 + 40 {
            return Pass(PassMalformedIp);
        }
        return Pass(PassNotVip);
    }
    if ether_type != 0x0800 {
        return Pass(PassNotIp);
    }
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
    let l4 = l3 + 20;
    let l4_len = total - 20;
    let syn = match proto {
        ICMP => return Pass(PassIcmp),
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
        src: addr(f, l3 + 12),
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
    Expected::Forward {
        backends: svc.backends,
        tuple,
        syn,
    }
}
