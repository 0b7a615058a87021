//! The tunnel modes' rules (README "Layer-3 DSR" and "MTU"), from the frame's bytes and
//! the service's configuration alone: what the outer headers hold, that the inner packet
//! is carried as it came, and the oversize rule. The flow hash is not recomputed: the
//! fields taken from it (outer source host bits, IPv6 flow label, GUE source port) are
//! read from the output, held to their ranges, to each other (they are bits of one
//! hash) and to their flow's earlier packets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fulcrum::{Forwarding, Tunnel, TunnelSource};
use fulcrum_lab::fixture::{Fixture, backend, backend_mac, backend6};

use crate::reference::{Inner, Svc};

/// The tunnelled services' IPv4 VIP.
pub const VIP_TUNNEL: Ipv4Addr = Ipv4Addr::new(10, 88, 99, 5);
/// The tunnelled services' IPv6 VIP.
pub const VIP6_TUNNEL: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x88, 0x99, 0, 0, 0, 5);

/// Puts the tunnel backends on `fx0`: permanent neighbours with their fixture MACs, each
/// IPv4 one behind a host route with its service's MTU, and `link_mtu` on `fx0` for
/// the IPv6 ones.
pub fn prepare(f: &Fixture, services: &[Svc], link_mtu: u16) {
    f.ns.ip(&["link", "set", "fx0", "mtu", &link_mtu.to_string()])
        .expect("link MTU");
    for svc in services {
        let Some(t) = &svc.tunnel else { continue };
        assert!(
            t.outer6 == (t.mtu == link_mtu),
            "IPv6 tunnels get the link's MTU, IPv4 ones their route's"
        );
        for n in svc.backends {
            let addr = t.backend(*n).to_string();
            let mac = backend_mac(*n).map(|b| format!("{b:02x}")).join(":");
            f.ns.ip(&[
                "neigh",
                "replace",
                &addr,
                "lladdr",
                &mac,
                "dev",
                "fx0",
                "nud",
                "permanent",
            ])
            .expect("neighbour");
            if !t.outer6 {
                let mtu = t.mtu.to_string();
                f.ns.ip(&["route", "replace", &addr, "dev", "fx0", "mtu", &mtu])
                    .expect("route with an MTU");
            }
        }
    }
}

/// A tunnelled service's configuration, as the reference sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tun {
    /// GUE's UDP destination port; `None`: IP-in-IP.
    pub gue: Option<u16>,
    /// The backends (and so the outer header) are IPv6.
    pub outer6: bool,
    /// The outer source, or its prefix.
    pub source: IpAddr,
    /// Host bits of the prefix (in the address's last 32 bits); 0: a fixed source.
    pub host_bits: u8,
    /// The backends' egress MTU (their route's, else the link's).
    pub mtu: u16,
}

impl Tun {
    /// Bytes the tunnel adds in front of the inner packet.
    pub fn overhead(&self) -> usize {
        (if self.outer6 { 40 } else { 20 }) + if self.gue.is_some() { 8 } else { 0 }
    }

    /// Backend `n`'s address: the outer destination.
    pub fn backend(&self, n: u8) -> IpAddr {
        if self.outer6 {
            IpAddr::V6(backend6(n))
        } else {
            IpAddr::V4(backend(n))
        }
    }

    /// The library's configuration of this tunnel.
    pub fn forwarding(&self) -> Forwarding {
        let source = match self.host_bits {
            0 => TunnelSource::Fixed(self.source),
            b => TunnelSource::Prefix {
                network: self.source,
                len: if self.outer6 { 128 } else { 32 } - b,
            },
        };
        let tunnel = if self.outer6 {
            Tunnel {
                ipv6_source: source,
                ..Tunnel::default()
            }
        } else {
            Tunnel {
                ipv4_source: source,
                ..Tunnel::default()
            }
        };
        match self.gue {
            Some(port) => Forwarding::Gue { tunnel, port },
            None => Forwarding::Ipip(tunnel),
        }
    }

    /// The coverage label of frames this tunnel carried from a VIP.
    pub fn label(&self, vip: IpAddr) -> &'static str {
        match (self.gue.is_some(), vip.is_ipv6(), self.outer6) {
            (false, false, false) => "tunnel_4in4",
            (false, false, true) => "tunnel_4in6",
            (false, true, _) => "tunnel_6in6",
            (true, false, false) => "gue_4in4",
            (true, false, true) => "gue_4in6",
            (true, true, _) => "gue_6in6",
        }
    }

    /// The mask of the source's host bits, host order.
    fn host_mask(&self) -> u32 {
        match self.host_bits {
            0 => 0,
            32.. => u32::MAX,
            b => (1u32 << b) - 1,
        }
    }
}

/// The outer fields that come from the flow hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hashed {
    pub src: IpAddr,
    /// IPv6 outer header only.
    pub label: u32,
    /// GUE only.
    pub sport: u16,
}

/// The smallest MTU of an IPv6 path.
const IPV6_MIN_MTU: usize = 1280;
/// Bytes of the packet an oversize answer quotes.
const QUOTE: usize = 256;

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

/// One's-complement sum of `data` (odd length padded), folded, starting at `sum`.
fn ones_sum(data: &[u8], mut sum: u32) -> u16 {
    for pair in data.chunks(2) {
        let hi = u32::from(pair[0]) << 8;
        sum += hi | pair.get(1).map_or(0, |b| u32::from(*b));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn checksum(data: &[u8], initial: u32) -> u16 {
    !ones_sum(data, initial)
}

/// The oversize rule: `None` when the packet fits once encapsulated; else the answer
/// ("fragmentation needed" / "packet too big", MACs swapped, from the VIP), or `None`
/// inside for a drop (`drop_too_big`).
pub fn oversize(f: &[u8], inner: Inner, t: &Tun) -> Option<Option<Vec<u8>>> {
    if inner.len + t.overhead() <= usize::from(t.mtu) {
        return None;
    }
    let room = usize::from(t.mtu).saturating_sub(t.overhead());
    let l3 = inner.l3;
    if inner.v6 {
        if inner.len <= IPV6_MIN_MTU {
            return Some(None);
        }
        return Some(Some(answer(f, l3, true, room.max(IPV6_MIN_MTU) as u16)));
    }
    let df = be16(f, l3 + 6) & 0x4000 != 0;
    if !df || f.len() < l3 + QUOTE {
        return Some(None);
    }
    Some(Some(answer(f, l3, false, room as u16)))
}

/// The ICMP answer to an oversize frame, built from the RFCs' field lists.
fn answer(f: &[u8], l3: usize, v6: bool, mtu: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(l3 + 48 + QUOTE);
    out.extend_from_slice(&f[6..12]);
    out.extend_from_slice(&f[0..6]);
    if l3 == 18 {
        out.extend_from_slice(&f[12..16]);
    }
    out.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    let quote = &f[l3..l3 + QUOTE];
    let mut msg = vec![if v6 { 2 } else { 3 }, if v6 { 0 } else { 4 }, 0, 0];
    msg.extend_from_slice(&u32::from(mtu).to_be_bytes());
    msg.extend_from_slice(quote);
    if v6 {
        let (client, vip) = (&f[l3 + 8..l3 + 24], &f[l3 + 24..l3 + 40]);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(vip);
        pseudo.extend_from_slice(client);
        pseudo.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        let sum = checksum(&msg, u32::from(ones_sum(&pseudo, 0)));
        msg[2..4].copy_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&[0x60, 0, 0, 0]);
        out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        out.extend_from_slice(&[58, 64]);
        out.extend_from_slice(vip);
        out.extend_from_slice(client);
    } else {
        let sum = checksum(&msg, 0);
        msg[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&((20 + msg.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
        ip.extend_from_slice(&f[l3 + 16..l3 + 20]);
        ip.extend_from_slice(&f[l3 + 12..l3 + 16]);
        let sum = checksum(&ip, 0);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&ip);
    }
    out.extend_from_slice(&msg);
    out
}

/// Checks a tunnelled frame `out` against the input `f`: to one of `backends` (found by
/// the outer destination), with the outer header the rules give and the inner packet
/// (and any bytes after it) exactly as it came. Returns the backend and the hashed
/// fields, for the caller to hold to the flow's other packets.
pub fn check_output(
    out: &[u8],
    f: &[u8],
    inner: Inner,
    t: &Tun,
    backends: &[u8],
    src_mac: [u8; 6],
) -> Result<(u8, Hashed), String> {
    let l3 = inner.l3;
    let ip_hlen = if t.outer6 { 40 } else { 20 };
    if out.len() != f.len() + t.overhead() {
        return Err(format!(
            "{} bytes out for {} in: not {} bytes of tunnel headers",
            out.len(),
            f.len(),
            t.overhead()
        ));
    }
    let addr_at = |at: usize| -> IpAddr {
        if t.outer6 {
            let o: [u8; 16] = out[at..at + 16].try_into().unwrap_or_default();
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            IpAddr::V4(Ipv4Addr::new(
                out[at],
                out[at + 1],
                out[at + 2],
                out[at + 3],
            ))
        }
    };
    let (src_at, dst_at) = if t.outer6 {
        (l3 + 8, l3 + 24)
    } else {
        (l3 + 12, l3 + 16)
    };
    let dst = addr_at(dst_at);
    let Some(n) = backends.iter().copied().find(|n| t.backend(*n) == dst) else {
        return Err(format!(
            "outer destination {dst} is none of the backends {backends:?}"
        ));
    };
    let src = addr_at(src_at);
    let last = |a: IpAddr| -> u32 {
        match a {
            IpAddr::V4(v) => u32::from(v),
            IpAddr::V6(v) => u128::from(v) as u32,
        }
    };
    let high = |a: IpAddr| -> u128 {
        match a {
            IpAddr::V4(_) => 0,
            IpAddr::V6(v) => u128::from(v) >> 32,
        }
    };
    let mask = t.host_mask();
    if high(src) != high(t.source) || last(src) & !mask != last(t.source) & !mask {
        return Err(format!(
            "outer source {src} is outside {}/{} host bits",
            t.source, t.host_bits
        ));
    }
    let label = if t.outer6 {
        u32::from_be_bytes([out[l3], out[l3 + 1], out[l3 + 2], out[l3 + 3]]) & 0xfffff
    } else {
        0
    };
    let sport = if t.gue.is_some() {
        be16(out, l3 + ip_hlen)
    } else {
        0
    };
    let hashed = Hashed { src, label, sport };
    // Bits of one hash: where two fields hold the same bits, they agree. The source's
    // host bits are the hash's under the mask as the address's last word lies in memory
    // (network order), the label and port its low bits.
    let word_mask = u32::from_ne_bytes(mask.to_be_bytes());
    let host = u32::from_ne_bytes(last(src).to_be_bytes()) & word_mask;
    if t.outer6 && host & 0xfffff != label & word_mask {
        return Err(format!(
            "outer source host bits {host:#x} and flow label {label:#x} are not one hash's"
        ));
    }
    if t.gue.is_some() {
        if sport & 0x8000 == 0 {
            return Err(format!("GUE source port {sport} below 32768"));
        }
        let common = u32::from(sport & 0x7fff);
        if host & 0x7fff != common & word_mask || (t.outer6 && label & 0x7fff != common) {
            return Err(format!(
                "GUE source port {sport:#x}, source host bits {host:#x} and label {label:#x} \
                 are not one hash's"
            ));
        }
    }
    let want = encapsulated(f, inner, t, n, src_mac, hashed);
    if out != want {
        let at = out.iter().zip(&want).position(|(a, b)| a != b);
        return Err(format!(
            "tunnelled frame differs from the rules' at byte {at:?} (l3 {l3}); want {}",
            want.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ));
    }
    Ok((n, hashed))
}

/// The frame the rules give for `f` tunnelled to backend `n` with the hashed fields `h`.
fn encapsulated(f: &[u8], inner: Inner, t: &Tun, n: u8, src_mac: [u8; 6], h: Hashed) -> Vec<u8> {
    let l3 = inner.l3;
    let mut out = Vec::with_capacity(f.len() + t.overhead());
    out.extend_from_slice(&backend_mac(n));
    out.extend_from_slice(&src_mac);
    if l3 == 18 {
        out.extend_from_slice(&f[12..16]);
    }
    out.extend_from_slice(if t.outer6 {
        &[0x86, 0xdd]
    } else {
        &[0x08, 0x00]
    });
    let tos = if inner.v6 {
        (f[l3] << 4) | (f[l3 + 1] >> 4)
    } else {
        f[l3 + 1]
    };
    let proto = match (t.gue, inner.v6) {
        (Some(_), _) => 17,
        (None, true) => 41,
        (None, false) => 4,
    };
    let udp = if t.gue.is_some() { 8 } else { 0 };
    let payload = inner.len + udp;
    let octets = |a: IpAddr| match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    };
    if t.outer6 {
        let first = (6u32 << 28) | (u32::from(tos) << 20) | h.label;
        out.extend_from_slice(&first.to_be_bytes());
        out.extend_from_slice(&(payload as u16).to_be_bytes());
        out.extend_from_slice(&[proto, 64]);
        out.extend_from_slice(&octets(h.src));
        out.extend_from_slice(&octets(t.backend(n)));
    } else {
        let mut ip = vec![0x45, tos];
        ip.extend_from_slice(&((20 + payload) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
        ip.extend_from_slice(&octets(h.src));
        ip.extend_from_slice(&octets(t.backend(n)));
        let sum = checksum(&ip, 0);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&ip);
    }
    if let Some(port) = t.gue {
        out.extend_from_slice(&h.sport.to_be_bytes());
        out.extend_from_slice(&port.to_be_bytes());
        out.extend_from_slice(&((8 + inner.len) as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }
    out.extend_from_slice(&f[l3..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_with_its_checksum_sums_to_zero() {
        let mut ip = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 4, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let sum = checksum(&ip, 0);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(checksum(&ip, 0), 0);
    }
}
