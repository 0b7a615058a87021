//! The `bgp:` section and each service's announce fields: which VIPs are announced to which
//! routers, and with what attributes (route health injection).

use std::{
    net::IpAddr, net::Ipv4Addr, net::Ipv6Addr, net::SocketAddr, path::PathBuf, time::Duration,
};

use serde::Deserialize;

/// `bgp`: the speaker. Without it nothing is announced and the announce fields of the
/// services have no effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bgp {
    /// `asn`: the local AS number, 1 to 4294967295 (4-octet ASNs are sent as RFC 6793 says).
    pub asn: u32,
    /// `router_id`: the BGP identifier, an IPv4 address unique among the peers' speakers.
    pub router_id: Ipv4Addr,
    /// `graceful_restart` (`120s`): the restart time advertised (RFC 4724), whole seconds
    /// from 1 to 4095; `off` (None) disables graceful restart, so a restart withdraws.
    pub graceful_restart: Option<Duration>,
    /// `shutdown_delay` (`2s`): on SIGTERM the routes are withdrawn, then the data plane
    /// keeps forwarding this long while routers move traffic away, then it detaches.
    pub shutdown_delay: Duration,
    /// `listen` (`0.0.0.0:179`, or `[::]:179` when a peer is IPv6, which accepts IPv4
    /// peers too): where routers' connections are accepted; `off` (None) only connects
    /// out, for a host whose own BGP daemon holds port 179.
    pub listen: Option<SocketAddr>,
    /// `next_hop_ipv6` (none): the next hop of IPv6 VIPs (MP_REACH_NLRI), a global IPv6
    /// address of this host. Without it an IPv6 session sends its own local address, and
    /// an IPv4 session cannot carry IPv6 VIPs, so it is required when one is announced
    /// and a peer is IPv4.
    pub next_hop_ipv6: Option<Ipv6Addr>,
    /// `peers`: the routers to announce to (at least one, each address once).
    pub peers: Vec<BgpPeer>,
}

impl Bgp {
    /// `listen` when not given.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 179));
    /// `listen` when not given and a peer is IPv6: both families on one socket.
    pub const DEFAULT_LISTEN_IPV6: SocketAddr = SocketAddr::V6(std::net::SocketAddrV6::new(
        Ipv6Addr::UNSPECIFIED,
        179,
        0,
        0,
    ));
    /// `graceful_restart` when not given.
    pub const DEFAULT_RESTART_TIME: Duration = Duration::from_secs(120);
    /// `shutdown_delay` when not given.
    pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::from_secs(2);
}

/// One BGP neighbor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpPeer {
    /// `address`: the router's address, IPv4 or IPv6 (global; link-local is refused).
    pub address: IpAddr,
    /// `asn`: the router's AS number; equal to `bgp.asn` makes the session iBGP.
    pub asn: u32,
    /// `port` (`179`): the router's TCP port, where we connect.
    pub port: u16,
    /// `hold_time` (`90s`): the hold time we offer, whole seconds, 0 (no keepalives) or 3
    /// to 65535; the session uses the smaller of both sides'.
    pub hold_time: Duration,
    /// `passive` (`false`): when true we never connect, only accept the router's
    /// connection on port 179.
    pub passive: bool,
    /// `md5_password_file` (none): a file holding the TCP MD5 (RFC 2385) key, trailing
    /// newline ignored; 1 to 80 bytes, as the kernel allows.
    pub md5_password_file: Option<PathBuf>,
    /// `next_hop` (the session's local address when it is IPv4): the NEXT_HOP of
    /// announced IPv4 VIPs; required on an IPv6 session when an IPv4 VIP is announced.
    /// IPv6 VIPs take `bgp.next_hop_ipv6`.
    pub next_hop: Option<IpAddr>,
}

impl BgpPeer {
    /// `port` when not given.
    pub const DEFAULT_PORT: u16 = 179;
    /// `hold_time` when not given.
    pub const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(90);
}

/// A service's announce fields: when its VIP is announced and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// `announce` (`auto`).
    pub mode: Announce,
    /// `min_healthy` (`1`): usable backends (healthy, not drained, reachable by the data
    /// plane) the service needs for its VIP to be announced; 1 to the number of backends.
    pub min_healthy: u32,
    /// `med` (none): MULTI_EXIT_DISC of the route, lower preferred.
    pub med: Option<u32>,
    /// `local_pref` (none): LOCAL_PREF, sent to iBGP peers only (RFC 4271 5.1.5).
    pub local_pref: Option<u32>,
    /// `communities` (none): RFC 1997 communities, written `ASN:VALUE` (16 bits each).
    pub communities: Vec<(u16, u16)>,
    /// `large_communities` (none): RFC 8092 communities, written `GLOBAL:DATA1:DATA2`.
    pub large_communities: Vec<(u32, u32, u32)>,
}

impl Default for Announcement {
    fn default() -> Self {
        Self {
            mode: Announce::Auto,
            min_healthy: 1,
            med: None,
            local_pref: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
        }
    }
}

/// Whether a service's VIP is announced at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Announce {
    /// `auto`: announced while at least `min_healthy` backends are usable.
    #[default]
    Auto,
    /// `never`: not announced; for VIPs that reach this host some other way.
    Never,
}
