//! How a service's packets reach its backends: rewritten MACs on a shared segment, or
//! encapsulated to backends anywhere the kernel has a route to.

use std::{fmt, net::IpAddr};

/// `forwarding` (`l2-dsr`), with the fields that only a tunnel takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Forwarding {
    /// `l2-dsr`: the destination MAC becomes the backend's; backends share a segment with
    /// the balancer and have the VIP's family.
    #[default]
    L2Dsr,
    /// `ipip`: IP-in-IP to the backend's address (4in4, 6in6, 4in6); backends may be routed.
    Ipip(Tunnel),
    /// `gue`: UDP to `port` then the inner packet, for routers that spread flows only by
    /// UDP ports.
    Gue {
        /// `tunnel_source`: outer source addresses.
        tunnel: Tunnel,
        /// `gue_port` (`6080`): the backends' decapsulation port.
        port: u16,
    },
}

impl Forwarding {
    /// `gue_port` when not given: what `fulcrum decap` listens on by default.
    pub const DEFAULT_GUE_PORT: u16 = 6080;

    /// The mode's name as written in the file (`l2-dsr`, `ipip`, `gue`).
    pub const fn mode(&self) -> &'static str {
        match self {
            Forwarding::L2Dsr => "l2-dsr",
            Forwarding::Ipip(_) => "ipip",
            Forwarding::Gue { .. } => "gue",
        }
    }

    /// The outer source addresses, for the tunnel modes.
    pub const fn tunnel(&self) -> Option<&Tunnel> {
        match self {
            Forwarding::L2Dsr => None,
            Forwarding::Ipip(tunnel) | Forwarding::Gue { tunnel, .. } => Some(tunnel),
        }
    }
}

impl fmt::Display for Forwarding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mode())
    }
}

/// `tunnel_source` (both `route`): the outer source address by the outer header's family,
/// which is the backend's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tunnel {
    /// `ipv4`: for IPv4 backends.
    pub ipv4: TunnelSource,
    /// `ipv6`: for IPv6 backends.
    pub ipv6: TunnelSource,
}

/// Where an outer source address comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TunnelSource {
    /// Not given: the kernel's preferred source of the route to the backend.
    #[default]
    Route,
    /// An address: every packet leaves from it.
    Fixed(IpAddr),
    /// A prefix: the host bits come from the flow's hash, so that backends' NICs spread
    /// flows over their receive queues. IPv6 prefixes are /96 or longer: only the last
    /// 32 bits vary.
    Prefix {
        /// The network, host bits zero.
        network: IpAddr,
        /// Its length.
        len: u8,
    },
}

impl fmt::Display for TunnelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelSource::Route => f.write_str("route"),
            TunnelSource::Fixed(address) => write!(f, "{address}"),
            TunnelSource::Prefix { network, len } => write!(f, "{network}/{len}"),
        }
    }
}
