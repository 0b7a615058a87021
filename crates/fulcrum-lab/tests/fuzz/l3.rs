//! The ICMP rules (README "ICMP"), read from the frame's bytes alone: echo answered in
//! place, "fragmentation needed" / "packet too big" about a VIP's reply forwarded to the
//! reversed flow's backend, anything else passed, a message cut short dropped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fulcrum::Counter;

use crate::{
    reference::{Expected, Inner, Svc, TCP, Tuple, UDP},
    tunnel,
};

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn addr_at(f: &[u8], at: usize, v6: bool) -> IpAddr {
    if v6 {
        let mut o = [0u8; 16];
        o.copy_from_slice(&f[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        IpAddr::V4(Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]))
    }
}

/// RFC 1624 eqn. 3: a checksum after one 16-bit word changes.
fn update(check: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn set16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// ICMP (ICMPv6) to the VIP `dst`: its header at `l4` of an IP packet of `ip_len` bytes
/// at `l3`.
pub fn icmp(
    f: &[u8],
    l3: usize,
    l4: usize,
    ip_len: usize,
    v6: bool,
    services: &'static [Svc],
) -> Expected {
    use Counter::*;
    if ip_len < (l4 - l3) + 8 || f.len() < l4 + 8 {
        return Expected::Drop(DropBadIcmp);
    }
    let (ty, code) = (f[l4], f[l4 + 1]);
    let echo = if v6 { 128 } else { 8 };
    if ty == echo {
        return Expected::Reply {
            frame: echo_reply(f, l3, l4, v6),
            reason: IcmpEchoReply,
        };
    }
    let too_big = if v6 { ty == 2 } else { ty == 3 && code == 4 };
    if !too_big {
        return Expected::Pass(PassIcmp);
    }
    let at = l4 + 8;
    let vip = addr_at(f, l3 + if v6 { 24 } else { 16 }, v6);
    let (src, dst, proto, ports) = if v6 {
        if f.len() < at + 40 || f[at] >> 4 != 6 {
            return Expected::Drop(DropBadIcmp);
        }
        (
            addr_at(f, at + 8, true),
            addr_at(f, at + 24, true),
            f[at + 6],
            at + 40,
        )
    } else {
        if f.len() < at + 20 {
            return Expected::Drop(DropBadIcmp);
        }
        let ihl = usize::from(f[at] & 0x0f) * 4;
        if f[at] >> 4 != 4 || ihl < 20 {
            return Expected::Drop(DropBadIcmp);
        }
        (
            addr_at(f, at + 12, false),
            addr_at(f, at + 16, false),
            f[at + 9],
            at + ihl,
        )
    };
    if src != vip || !(proto == TCP || proto == UDP) {
        return Expected::Pass(PassIcmp);
    }
    if f.len() < ports + 4 {
        return Expected::Drop(DropBadIcmp);
    }
    // The reversed inner 5-tuple: the client's flow to the VIP.
    let tuple = Tuple {
        src: dst,
        dst: src,
        sport: be16(f, ports + 2),
        dport: be16(f, ports),
        proto,
    };
    let find = |port: u16| {
        services
            .iter()
            .find(|s| s.vip == vip && s.proto == proto && s.port == port)
    };
    let Some(svc) = find(tuple.dport)
        .or_else(|| find(0))
        .filter(|s| !s.backends.is_empty())
    else {
        return Expected::Pass(PassIcmp);
    };
    // Forwarded as the flow's packets are, the oversize rule included.
    let inner = Inner {
        l3,
        len: ip_len,
        v6,
    };
    if let Some(t) = &svc.tunnel
        && let Some(answer) = tunnel::oversize(f, inner, t)
    {
        return Expected::Oversize {
            svc,
            tuple,
            answer,
            icmp: true,
            syn: false,
        };
    }
    Expected::ForwardIcmp { svc, tuple, inner }
}

/// The request turned into its reply in place, checksums updated incrementally.
fn echo_reply(f: &[u8], l3: usize, l4: usize, v6: bool) -> Vec<u8> {
    let mut r = f.to_vec();
    r[0..6].copy_from_slice(&f[6..12]);
    r[6..12].copy_from_slice(&f[0..6]);
    let old_type = be16(f, l4);
    let new_type = u16::from_be_bytes([if v6 { 129 } else { 0 }, f[l4 + 1]]);
    if v6 {
        r[l3 + 7] = 64;
        r[l3 + 8..l3 + 24].copy_from_slice(&f[l3 + 24..l3 + 40]);
        r[l3 + 24..l3 + 40].copy_from_slice(&f[l3 + 8..l3 + 24]);
    } else {
        let old = be16(f, l3 + 8);
        let new = u16::from_be_bytes([64, f[l3 + 9]]);
        r[l3 + 8] = 64;
        set16(&mut r, l3 + 10, update(be16(f, l3 + 10), old, new));
        r[l3 + 12..l3 + 16].copy_from_slice(&f[l3 + 16..l3 + 20]);
        r[l3 + 16..l3 + 20].copy_from_slice(&f[l3 + 12..l3 + 16]);
    }
    r[l4] = (new_type >> 8) as u8;
    set16(&mut r, l4 + 2, update(be16(f, l4 + 2), old_type, new_type));
    r
}
