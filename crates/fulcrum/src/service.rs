//! Services and destinations as an operator names them.

use std::{fmt, net::IpAddr, str::FromStr};

use fulcrum_common::{IPPROTO_TCP, IPPROTO_UDP};

/// Transport protocol of a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP, the default when none is given.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The IP protocol number the data plane matches on.
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// What identifies a virtual service: the address, port and protocol clients connect to.
///
/// Parses from `VIP[:PORT][/tcp|/udp]`, an IPv6 VIP in brackets when a port follows; a
/// missing port means every port of the VIP.
///
/// ```
/// use fulcrum::{Protocol, ServiceId};
/// let web: ServiceId = "10.0.0.1:80".parse().unwrap();
/// assert_eq!(web.protocol, Protocol::Tcp);
/// let dns: ServiceId = "10.0.0.1:53/udp".parse().unwrap();
/// assert_eq!(dns.to_string(), "10.0.0.1:53/udp");
/// let web6: ServiceId = "[2001:db8::1]:443".parse().unwrap();
/// assert_eq!(web6.to_string(), "[2001:db8::1]:443/tcp");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId {
    /// The virtual IP, either family.
    pub vip: IpAddr,
    /// Destination port; 0 means every port.
    pub port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

impl ServiceId {
    /// A service on one port (0 for every port).
    pub fn new(vip: impl Into<IpAddr>, port: u16, protocol: Protocol) -> Self {
        Self {
            vip: vip.into(),
            port,
            protocol,
        }
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.vip) {
            (0, vip) => write!(f, "{vip}/{}", self.protocol),
            (port, IpAddr::V4(vip)) => write!(f, "{vip}:{port}/{}", self.protocol),
            (port, IpAddr::V6(vip)) => write!(f, "[{vip}]:{port}/{}", self.protocol),
        }
    }
}

/// Why a service string did not parse; carries the input so the message can quote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseServiceError {
    /// The address part is not an IP address (IPv6 with a port goes in brackets).
    #[error("'{input}': '{part}' is not an IP address")]
    Address { input: String, part: String },
    /// The port part is not a number from 1 to 65535.
    #[error("'{input}': port '{part}' is not a number from 1 to 65535")]
    Port { input: String, part: String },
    /// The protocol part is neither tcp nor udp.
    #[error("'{input}': protocol '{part}' is neither tcp nor udp")]
    Protocol { input: String, part: String },
}

impl FromStr for ServiceId {
    type Err = ParseServiceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (rest, protocol) = match input.rsplit_once('/') {
            Some((rest, "tcp")) => (rest, Protocol::Tcp),
            Some((rest, "udp")) => (rest, Protocol::Udp),
            Some((_, other)) => {
                return Err(ParseServiceError::Protocol {
                    input: input.into(),
                    part: other.into(),
                });
            }
            None => (input, Protocol::Tcp),
        };
        let (addr, port) = split_port(rest);
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| ParseServiceError::Port {
                    input: input.into(),
                    part: port.into(),
                })?,
            None => 0,
        };
        let vip: IpAddr = addr.parse().map_err(|_| ParseServiceError::Address {
            input: input.into(),
            part: addr.into(),
        })?;
        Ok(Self::new(vip, port, protocol))
    }
}

/// `ADDR[:PORT]` or `[ADDR][:PORT]` split at the port (a bare IPv6 address has colons but
/// no port).
fn split_port(text: &str) -> (&str, Option<&str>) {
    if let Some(rest) = text.strip_prefix('[')
        && let Some((addr, after)) = rest.split_once(']')
    {
        return (
            addr,
            after
                .strip_prefix(':')
                .or(Some(after).filter(|a| !a.is_empty())),
        );
    }
    match text.split_once(':') {
        Some((addr, port)) if !port.contains(':') => (addr, Some(port)),
        _ => (text, None),
    }
}

/// How a new flow's hash is formed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scheduler {
    /// Source and destination address and port, and protocol: the best spread.
    #[default]
    FiveTuple,
    /// Source address only ("sticky"): every connection of a client lands on one backend.
    SourceIp,
}

/// How packets reach a service's backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Forwarding {
    /// Layer-2 DSR: only the MACs change; backends share a segment with the balancer.
    #[default]
    L2Dsr,
    /// IP-in-IP to the backend's address (4in4, 6in6 or 4in6 by the backend's family), so
    /// backends may sit behind routers.
    Ipip(Tunnel),
    /// UDP to `port` carrying the IP packet (GUE's direct IP encapsulation), for networks
    /// whose routers spread flows by UDP ports only.
    Gue {
        /// Outer source addresses.
        tunnel: Tunnel,
        /// UDP destination port the backends' decapsulators listen on.
        port: u16,
    },
}

/// Default GUE port of the balancer and of `fulcrum decap`.
pub const DEFAULT_GUE_PORT: u16 = 6080;

/// Outer source addresses of a tunnel, per outer family (the backend's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tunnel {
    /// For IPv4 backends.
    pub ipv4_source: TunnelSource,
    /// For IPv6 backends.
    pub ipv6_source: TunnelSource,
}

/// Where a tunnelled packet's outer source address comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TunnelSource {
    /// The kernel's preferred source address for the route to the backend.
    #[default]
    Route,
    /// Always this address.
    Fixed(IpAddr),
    /// An address of this prefix chosen per flow, so a backend's NIC spreads flows over
    /// its receive queues.
    Prefix {
        /// The prefix (host bits zero).
        network: IpAddr,
        /// Its length.
        len: u8,
    },
}

/// A virtual service and how it balances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    /// What clients connect to.
    pub id: ServiceId,
    /// How new flows are hashed.
    pub scheduler: Scheduler,
    /// How packets reach the backends.
    pub forwarding: Forwarding,
    /// Whether the balancer answers ICMP echo requests to the VIP (on by default). With
    /// several services on one VIP, any that says no turns echo off for the address.
    pub icmp_echo: bool,
}

impl Service {
    /// A service with the default (5-tuple) scheduler, L2 DSR, answering echo.
    pub fn new(id: ServiceId) -> Self {
        Self {
            id,
            scheduler: Scheduler::FiveTuple,
            forwarding: Forwarding::L2Dsr,
            icmp_echo: true,
        }
    }
}

/// A real server behind a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The backend's address: on a subnet directly connected to an attached interface for
    /// L2 DSR, anywhere routed for tunnels; it holds the VIP on its loopback.
    pub address: IpAddr,
    /// Relative share of new flows; 0 takes no new flows, like a drain.
    pub weight: u32,
}

impl Destination {
    /// A destination with weight 1.
    pub fn new(address: impl Into<IpAddr>) -> Self {
        Self {
            address: address.into(),
            weight: 1,
        }
    }

    /// The same destination with another weight.
    pub const fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let cases = [
            ("10.0.0.1", ServiceId::new([10, 0, 0, 1], 0, Protocol::Tcp)),
            (
                "10.0.0.1:80",
                ServiceId::new([10, 0, 0, 1], 80, Protocol::Tcp),
            ),
            (
                "10.0.0.1/udp",
                ServiceId::new([10, 0, 0, 1], 0, Protocol::Udp),
            ),
            (
                "10.0.0.1:53/udp",
                ServiceId::new([10, 0, 0, 1], 53, Protocol::Udp),
            ),
            (
                "2001:db8::1",
                ServiceId::new("2001:db8::1".parse::<IpAddr>().unwrap(), 0, Protocol::Tcp),
            ),
            (
                "[2001:db8::1]:443/udp",
                ServiceId::new("2001:db8::1".parse::<IpAddr>().unwrap(), 443, Protocol::Udp),
            ),
            (
                "2001:db8::1/udp",
                ServiceId::new("2001:db8::1".parse::<IpAddr>().unwrap(), 0, Protocol::Udp),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<ServiceId>(), Ok(want), "{text}");
            assert_eq!(want.to_string().parse::<ServiceId>(), Ok(want), "{want}");
        }
    }

    #[test]
    fn errors_quote_the_bad_part() {
        let err = |s: &str| s.parse::<ServiceId>().unwrap_err().to_string();
        assert_eq!(
            err("10.0.0.300:80"),
            "'10.0.0.300:80': '10.0.0.300' is not an IP address"
        );
        assert_eq!(
            err("[2001:db8::1]:0"),
            "'[2001:db8::1]:0': port '0' is not a number from 1 to 65535"
        );
        assert_eq!(
            err("10.0.0.1:0"),
            "'10.0.0.1:0': port '0' is not a number from 1 to 65535"
        );
        assert_eq!(
            err("10.0.0.1:http"),
            "'10.0.0.1:http': port 'http' is not a number from 1 to 65535"
        );
        assert_eq!(
            err("10.0.0.1:80/sctp"),
            "'10.0.0.1:80/sctp': protocol 'sctp' is neither tcp nor udp"
        );
    }
}
