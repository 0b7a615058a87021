//! The fuzzed configuration: L2 DSR services (one backend behind a VLAN) and tunnelled
//! ones in every mode, and what a forwarded frame must look like for an L2 backend.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aya::maps::{Array, MapData};
use fulcrum::{FlowRecord, Protocol};
use fulcrum_common::{BACKEND_V_VLAN, BackendValue, maps};
use fulcrum_lab::fixture::{
    Fixture, VIP, VIP_ALL_PORTS, VIP_EMPTY, VIP6, backend, backend_mac, backend6,
};

use crate::{
    reference::{Svc, TCP, Tuple, UDP},
    tunnel::{Tun, VIP_TUNNEL, VIP6_TUNNEL},
};

pub const SERVICES: &[Svc] = &[
    Svc {
        vip: IpAddr::V4(VIP),
        port: 80,
        proto: TCP,
        backends: &[1, 2, 3],
        tunnel: None,
    },
    Svc {
        vip: IpAddr::V4(VIP),
        port: 53,
        proto: UDP,
        backends: &[1, 2],
        tunnel: None,
    },
    Svc {
        vip: IpAddr::V4(VIP_ALL_PORTS),
        port: 0,
        proto: TCP,
        backends: &[4],
        tunnel: None,
    },
    Svc {
        vip: IpAddr::V4(VIP_EMPTY),
        port: 80,
        proto: TCP,
        backends: &[],
        tunnel: None,
    },
    Svc {
        vip: IpAddr::V6(VIP6),
        port: 80,
        proto: TCP,
        backends: &[1, 2, 3],
        tunnel: None,
    },
    Svc {
        vip: IpAddr::V6(VIP6),
        port: 53,
        proto: UDP,
        backends: &[3, 4],
        tunnel: None,
    },
    // Tunnels, on backends 11 to 14 (addresses and neighbours set up by `tunnel_fixture`).
    Svc {
        vip: IpAddr::V4(VIP_TUNNEL),
        port: 80,
        proto: TCP,
        backends: &[11, 12],
        tunnel: Some(Tun {
            gue: None,
            outer6: false,
            source: IpAddr::V4(Ipv4Addr::new(10, 88, 200, 0)),
            host_bits: 4,
            mtu: ROUTE_MTU,
        }),
    },
    Svc {
        vip: IpAddr::V4(VIP_TUNNEL),
        port: 53,
        proto: UDP,
        backends: &[13, 14],
        tunnel: Some(Tun {
            gue: Some(7777),
            outer6: false,
            source: IpAddr::V4(Ipv4Addr::new(10, 88, 0, 1)),
            host_bits: 0,
            mtu: ROUTE_MTU,
        }),
    },
    Svc {
        vip: IpAddr::V4(VIP_TUNNEL),
        port: 443,
        proto: TCP,
        backends: &[11, 12, 13],
        tunnel: Some(Tun {
            gue: None,
            outer6: true,
            source: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x88, 0, 0, 0, 0, 1)),
            host_bits: 0,
            mtu: LINK_MTU,
        }),
    },
    Svc {
        vip: IpAddr::V6(VIP6_TUNNEL),
        port: 80,
        proto: TCP,
        backends: &[12, 13],
        tunnel: Some(Tun {
            gue: None,
            outer6: true,
            source: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x88, 0xee, 0, 0, 0, 0)),
            host_bits: 16,
            mtu: LINK_MTU,
        }),
    },
    Svc {
        vip: IpAddr::V6(VIP6_TUNNEL),
        port: 53,
        proto: UDP,
        backends: &[11, 14],
        tunnel: Some(Tun {
            gue: Some(9999),
            outer6: true,
            source: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x88, 0xef, 0, 0, 0, 0)),
            host_bits: 24,
            mtu: LINK_MTU,
        }),
    },
];

/// `fx0`'s MTU: what IPv6 tunnels get (IPv6 routes' MTU is not read). Below 1280 + 40,
/// so both halves of the IPv6 oversize rule (answered, dropped) apply.
pub const LINK_MTU: u16 = 1300;
/// The MTU of the IPv4 tunnel backends' host routes.
const ROUTE_MTU: u16 = 600;

/// The backend whose value carries `BACKEND_V_VLAN` with [`TRUNK_VLAN`], as the library
/// writes it for a backend behind a VLAN sub-interface: its frames leave tagged.
pub const TAGGED_BACKEND: u8 = 4;
/// See [`TAGGED_BACKEND`].
const TRUNK_VLAN: u16 = 300;

/// Puts [`TAGGED_BACKEND`]'s slots on [`TRUNK_VLAN`] (this kernel has no VLAN links for
/// the library to learn it from).
pub fn tag_backend(f: &Fixture) {
    let mut slots: Array<MapData, BackendValue> =
        Array::try_from(f.map(maps::BACKENDS)).expect("BACKENDS");
    for slot in 1..64 {
        let Ok(mut b) = slots.get(&slot, 0) else {
            continue;
        };
        if b.ifindex != 0 && b.mac == backend_mac(TAGGED_BACKEND) {
            b.flags |= BACKEND_V_VLAN;
            b.vlan = TRUNK_VLAN.to_be();
            slots.set(slot, b, 0).expect("write the backend");
        }
    }
}

/// What leaves for backend `n`: the frame with the MACs rewritten, and for
/// [`TAGGED_BACKEND`] with its tag (rewritten, or pushed onto an untagged frame).
pub fn forwarded_as(frame: &[u8], n: u8, src_mac: [u8; 6]) -> Vec<u8> {
    let mut want = frame.to_vec();
    if n == TAGGED_BACKEND {
        if frame[12..14] == [0x81, 0x00] {
            want[14..16].copy_from_slice(&TRUNK_VLAN.to_be_bytes());
        } else {
            let tag = [[0x81, 0x00], TRUNK_VLAN.to_be_bytes()].concat();
            want.splice(12..12, tag);
        }
    }
    want[0..6].copy_from_slice(&backend_mac(n));
    want[6..12].copy_from_slice(&src_mac);
    want
}

/// Backend `n`'s address: in the family of the VIP for L2 DSR, the tunnel's outer family
/// for a tunnel.
pub fn backend_addr(svc: &Svc, n: u8) -> IpAddr {
    match (svc.tunnel, svc.vip) {
        (Some(t), _) => t.backend(n),
        (None, IpAddr::V4(_)) => IpAddr::V4(backend(n)),
        (None, IpAddr::V6(_)) => IpAddr::V6(backend6(n)),
    }
}

/// What sharing says of a flow of `tuple` (of service `svc`) pinned to backend `n`.
pub fn flow_record(svc: &Svc, tuple: &Tuple, n: u8) -> FlowRecord {
    FlowRecord {
        protocol: if tuple.proto == TCP {
            Protocol::Tcp
        } else {
            Protocol::Udp
        },
        client: SocketAddr::new(tuple.src, tuple.sport),
        vip: SocketAddr::new(tuple.dst, tuple.dport),
        service_port: svc.port,
        backend: backend_addr(svc, n),
    }
}
