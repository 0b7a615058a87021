//! Layer-3 DSR in the library: what a tunnelled destination's [`BackendValue`] holds
//! besides the next hop's MAC, found in the kernel's FIB when the destination is added
//! and again whenever neighbours are refreshed, so a route or MTU change reaches the data
//! plane within a refresh.
//!
//! The next hop is `route_get(backend)`: the route's gateway, or the backend itself when
//! it is on-link; its MAC comes from the neighbour table like an L2 backend's. The outer
//! source is the route's preferred source, a fixed address, or a prefix whose host bits
//! (in the address's last 32 bits) the data plane takes from the flow hash. The egress
//! MTU is the route's when it has one, else the link's: for an IPv6 outer header the
//! link's IPv6 MTU, which a router advertisement or sysctl may set below IFLA_MTU (and
//! which no route shows); never more than the link carries.

use std::net::IpAddr;

use fulcrum_common::{BACKEND_V_TUNNEL6, BackendValue, FORWARD_GUE, FORWARD_IPIP};

use tracing::{info, warn};

use super::{Balancer, NextHop};
use crate::{
    BalancerError, Forwarding, ServiceId, TunnelSource,
    netlink::{Link, Netlink, NetlinkError, RouteKind},
};

impl Balancer {
    /// Reads every tunnelled destination's route again (next hop, source, MTU) and
    /// records what changed; a new next hop's MAC is asked for and picked up by the
    /// neighbour refresh that follows. Returns the destinations whose slot must be
    /// rewritten.
    pub(super) fn refresh_tunnels(
        &mut self,
    ) -> Result<Vec<(ServiceId, u32, Option<NextHop>)>, BalancerError> {
        let mut todo = Vec::new();
        for (id, state) in &self.services {
            if state.forwarding == Forwarding::L2Dsr {
                continue;
            }
            for (address, d) in &state.destinations {
                todo.push((*id, state.forwarding, *address, d.backend));
            }
        }
        let mut changed = Vec::new();
        for (id, forwarding, address, backend) in todo {
            let path = match resolve(self.netlink()?, id.vip, &forwarding, address) {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(e) => {
                    // The last known path stays: a route flap should not stop the flows.
                    warn!(service = %id, backend = %address, error = %e, "tunnel path not refreshed");
                    continue;
                }
            };
            let old = self.tunnels.get(&backend).copied();
            if old == Some(path) {
                continue;
            }
            info!(service = %id, backend = %address, next_hop = %path.next_hop, mtu = path.mtu, "tunnel path changed");
            if old.is_none_or(|o| o.next_hop != path.next_hop || o.ifindex != path.ifindex) {
                self.netlink()?
                    .request_resolution(path.ifindex, path.next_hop)?;
                self.resolution_requests
                    .insert((path.ifindex, path.next_hop));
                if let Some(d) = self
                    .services
                    .get_mut(&id)
                    .and_then(|s| s.destinations.get_mut(&address))
                {
                    d.egress = path.ifindex;
                }
            }
            self.tunnels.insert(backend, path);
            changed.push((id, backend, None));
        }
        Ok(changed)
    }

    /// The next hop a destination's slot is resolved to, if any.
    pub(super) fn dest_by_slot(&self, backend: u32) -> Option<NextHop> {
        self.services
            .values()
            .flat_map(|s| s.destinations.values())
            .find(|d| d.backend == backend)
            .and_then(|d| d.neighbour)
    }
}

/// How a tunnelled destination is reached now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TunnelPath {
    /// Egress interface.
    pub ifindex: u32,
    /// The neighbour whose MAC frames carry: the gateway, or the backend when on-link.
    pub next_hop: IpAddr,
    /// Egress MTU (L3 bytes).
    pub mtu: u16,
    mode: u8,
    flags: u8,
    gue_port: u16,
    src_mask: u32,
    dst: [u32; 4],
    src: [u32; 4],
}

impl TunnelPath {
    /// Writes the tunnel fields into `v` (the caller writes the MACs and ifindex).
    pub(crate) fn apply(&self, v: &mut BackendValue) {
        v.mode = self.mode;
        v.flags |= self.flags;
        v.mtu = self.mtu;
        v.gue_port = self.gue_port;
        v.src_mask = self.src_mask;
        v.dst = self.dst;
        v.src = self.src;
    }
}

/// The tunnel path to `backend` for a service on `vip` forwarded as `forwarding`; `None`
/// for L2 DSR. The outer family is the backend's; an IPv6 VIP on an IPv4 backend is
/// refused (the program has no 6in4).
pub(crate) fn resolve(
    netlink: &mut Netlink,
    vip: IpAddr,
    forwarding: &Forwarding,
    backend: IpAddr,
) -> Result<Option<TunnelPath>, BalancerError> {
    let (mode, tunnel, gue_port) = match forwarding {
        Forwarding::L2Dsr => return Ok(None),
        Forwarding::Ipip(t) => (FORWARD_IPIP, t, 0),
        Forwarding::Gue { tunnel, port } => (FORWARD_GUE, tunnel, *port),
    };
    if vip.is_ipv6() && backend.is_ipv4() {
        return Err(tunnel_error(
            backend,
            "an IPv6 VIP cannot be tunnelled to an IPv4 backend",
        ));
    }
    let route = netlink.route_get(backend).map_err(|e| match e {
        NetlinkError::NoRoute(_) => tunnel_error(backend, "no route to it"),
        other => other.into(),
    })?;
    if route.kind == RouteKind::Local {
        return Err(tunnel_error(backend, "it is an address of this host"));
    }
    let link = netlink.link(route.ifindex)?;
    let mtu = egress_mtu(route.mtu, &link, backend.is_ipv6());
    let source = match backend {
        IpAddr::V4(_) => &tunnel.ipv4_source,
        IpAddr::V6(_) => &tunnel.ipv6_source,
    };
    let (src, src_mask) = outer_source(source, backend, route.prefsrc)?;
    Ok(Some(TunnelPath {
        ifindex: route.ifindex,
        next_hop: route.next_hop(backend),
        mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
        mode,
        flags: if backend.is_ipv6() {
            BACKEND_V_TUNNEL6
        } else {
            0
        },
        gue_port: gue_port.to_be(),
        src_mask,
        dst: words(backend),
        src,
    }))
}

/// The MTU a tunnelled packet leaving by `link` must fit: the kernel's own rule (the
/// route's MTU, else the link's for the outer family), capped at IFLA_MTU, since a route
/// may claim more than the link sends and XDP drops what exceeds the device's MTU.
fn egress_mtu(route: Option<u32>, link: &Link, ipv6: bool) -> u32 {
    let nonzero = |m: &u32| *m != 0;
    let family = if ipv6 {
        link.mtu6.filter(nonzero)
    } else {
        None
    };
    let mtu = route.filter(nonzero).or(family).unwrap_or(link.mtu);
    if link.mtu == 0 {
        mtu
    } else {
        mtu.min(link.mtu)
    }
}

/// The outer source words and host mask (network order) for `backend`'s family.
pub(crate) fn outer_source(
    source: &TunnelSource,
    backend: IpAddr,
    prefsrc: Option<IpAddr>,
) -> Result<([u32; 4], u32), BalancerError> {
    let same_family = |a: &IpAddr| a.is_ipv4() == backend.is_ipv4();
    match *source {
        TunnelSource::Route => match prefsrc {
            Some(a) if same_family(&a) => Ok((words(a), 0)),
            _ => Err(tunnel_error(
                backend,
                "the route to it names no source address of its family: configure a fixed \
                 tunnel source or a prefix",
            )),
        },
        TunnelSource::Fixed(a) if same_family(&a) => Ok((words(a), 0)),
        TunnelSource::Fixed(a) => Err(tunnel_error(
            backend,
            &format!("tunnel source {a} is not of the backend's family"),
        )),
        TunnelSource::Prefix { network, len } => {
            if !same_family(&network) {
                return Err(tunnel_error(
                    backend,
                    &format!("tunnel source prefix {network}/{len} is not of the backend's family"),
                ));
            }
            let bits = if network.is_ipv4() { 32 } else { 128 };
            if len > bits {
                return Err(tunnel_error(
                    backend,
                    &format!("tunnel source prefix {network}/{len}: longer than {bits} bits"),
                ));
            }
            // Host bits that fall in the last word; a shorter prefix varies those only.
            let in_last = (bits - len).min(32);
            let host: u32 = if in_last == 32 {
                u32::MAX
            } else {
                (1u32 << in_last) - 1
            };
            let mut w = words(network);
            let last = if network.is_ipv4() { 0 } else { 3 };
            let mask = host.to_be();
            w[last] &= !mask;
            Ok((w, mask))
        }
    }
}

/// An address as the data plane's words: network order, IPv4 in word 0.
pub(crate) fn words(a: IpAddr) -> [u32; 4] {
    match a {
        IpAddr::V4(v4) => [u32::from_ne_bytes(v4.octets()), 0, 0, 0],
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [w(0), w(4), w(8), w(12)]
        }
    }
}

fn tunnel_error(backend: IpAddr, why: &str) -> BalancerError {
    BalancerError::Tunnel {
        address: backend,
        why: why.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::netlink::live::{in_lab, ip, sysctl};

    const B4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 5));

    #[test]
    fn prefix_keeps_network_bits_and_masks_host_bits() {
        let src = TunnelSource::Prefix {
            network: "192.0.2.77".parse().unwrap(),
            len: 28,
        };
        let (w, mask) = outer_source(&src, B4, None).unwrap();
        assert_eq!(w[0].to_ne_bytes(), [192, 0, 2, 64]);
        assert_eq!(mask.to_ne_bytes(), [0, 0, 0, 0x0f]);
    }

    #[test]
    fn ipv6_prefix_varies_the_last_word_only() {
        let backend: IpAddr = "2001:db8:200::10".parse().unwrap();
        let src = TunnelSource::Prefix {
            network: "2001:db8:ffff::".parse().unwrap(),
            len: 64,
        };
        let (w, mask) = outer_source(&src, backend, None).unwrap();
        assert_eq!(w, words("2001:db8:ffff::".parse().unwrap()));
        assert_eq!(mask, u32::MAX);
        let src = TunnelSource::Prefix {
            network: "2001:db8:ffff::".parse().unwrap(),
            len: 120,
        };
        assert_eq!(
            outer_source(&src, backend, None).unwrap().1.to_ne_bytes(),
            [0, 0, 0, 0xff]
        );
    }

    /// The path to `backend` in the netlink live lab (link `a`, MTU 1400), IP-in-IP.
    fn path_mtu(nl: &mut Netlink, backend: &str) -> u16 {
        let vip = if backend.contains(':') {
            "2001:db8:99::100"
        } else {
            "10.99.0.100"
        };
        let forwarding = Forwarding::Ipip(crate::Tunnel::default());
        let backend = backend.parse().expect("address");
        let path = resolve(nl, vip.parse().expect("VIP"), &forwarding, backend);
        path.expect("resolve").expect("tunnelled").mtu
    }

    #[test]
    fn both_families_take_the_route_mtu_capped_at_the_link() {
        in_lab(|_| {
            let mut nl = Netlink::open().expect("open");
            ip("route add 10.210.0.0/24 via 10.99.0.2 dev a mtu 1300");
            ip("-6 route add 2001:db8:210::/64 via 2001:db8:99::2 dev a mtu 1300");
            ip("route add 10.211.0.0/24 via 10.99.0.2 dev a mtu 1500");
            ip("-6 route add 2001:db8:211::/64 via 2001:db8:99::2 dev a mtu 1500");
            for (backend, mtu) in [
                ("10.210.0.7", 1300),
                ("2001:db8:210::7", 1300),
                // A route above the link's 1400 would have XDP send frames the device drops.
                ("10.211.0.7", 1400),
                ("2001:db8:211::7", 1400),
                ("10.200.0.7", 1400),
                ("2001:db8:200::10", 1400),
            ] {
                assert_eq!(path_mtu(&mut nl, backend), mtu, "{backend}");
            }
        });
    }

    #[test]
    fn ipv6_outer_headers_fit_the_links_ipv6_mtu() {
        in_lab(|_| {
            let mut nl = Netlink::open().expect("open");
            // As a router advertisement's MTU option would: IPv6 only, shown by no route.
            sysctl("net.ipv6.conf.a.mtu", "1320");
            ip("-6 route add 2001:db8:210::/64 via 2001:db8:99::2 dev a mtu 1300");
            for (backend, mtu) in [
                ("2001:db8:200::10", 1320),
                ("2001:db8:210::7", 1300),
                ("10.200.0.7", 1400),
            ] {
                assert_eq!(path_mtu(&mut nl, backend), mtu, "{backend}");
            }
        });
    }

    #[test]
    fn egress_mtu_ignores_zeros() {
        let link = |mtu, mtu6| Link {
            index: 2,
            name: "a".into(),
            mac: None,
            mtu,
            mtu6,
            vlan: None,
        };
        assert_eq!(egress_mtu(Some(0), &link(1400, Some(0)), true), 1400);
        assert_eq!(egress_mtu(Some(1300), &link(0, None), false), 1300);
        assert_eq!(egress_mtu(None, &link(1400, Some(1320)), false), 1400);
    }

    #[test]
    fn sources_of_the_other_family_are_refused() {
        let fixed = TunnelSource::Fixed("2001:db8::1".parse().unwrap());
        let e = outer_source(&fixed, B4, None).unwrap_err().to_string();
        assert!(e.contains("10.1.0.5") && e.contains("family"), "{e}");
        let e = outer_source(&TunnelSource::Route, B4, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no source address"), "{e}");
        assert_eq!(
            outer_source(&TunnelSource::Route, B4, Some("10.9.0.1".parse().unwrap())).unwrap(),
            (words("10.9.0.1".parse().unwrap()), 0)
        );
    }
}
