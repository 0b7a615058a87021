//! Services and destinations as an operator names them.

use std::{fmt, net::Ipv4Addr, str::FromStr};

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
/// Parses from `VIP[:PORT][/tcp|/udp]`; a missing port means every port of the VIP.
///
/// ```
/// use fulcrum::{Protocol, ServiceId};
/// let web: ServiceId = "10.0.0.1:80".parse().unwrap();
/// assert_eq!(web.protocol, Protocol::Tcp);
/// let dns: ServiceId = "10.0.0.1:53/udp".parse().unwrap();
/// assert_eq!(dns.to_string(), "10.0.0.1:53/udp");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId {
    /// The virtual IP.
    pub vip: Ipv4Addr,
    /// Destination port; 0 means every port.
    pub port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

impl ServiceId {
    /// A service on one port (0 for every port).
    pub const fn new(vip: Ipv4Addr, port: u16, protocol: Protocol) -> Self {
        Self {
            vip,
            port,
            protocol,
        }
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port == 0 {
            write!(f, "{}/{}", self.vip, self.protocol)
        } else {
            write!(f, "{}:{}/{}", self.vip, self.port, self.protocol)
        }
    }
}

/// Why a service string did not parse; carries the input so the message can quote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseServiceError {
    /// The address part is not an IPv4 address.
    #[error("'{input}': '{part}' is not an IPv4 address")]
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
        let (addr, port) = match rest.split_once(':') {
            Some((addr, port)) => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| ParseServiceError::Port {
                        input: input.into(),
                        part: port.into(),
                    })?;
                (addr, port)
            }
            None => (rest, 0),
        };
        let vip = addr.parse().map_err(|_| ParseServiceError::Address {
            input: input.into(),
            part: addr.into(),
        })?;
        Ok(Self::new(vip, port, protocol))
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

/// A virtual service and how it balances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    /// What clients connect to.
    pub id: ServiceId,
    /// How new flows are hashed.
    pub scheduler: Scheduler,
}

impl Service {
    /// A service with the default (5-tuple) scheduler.
    pub const fn new(id: ServiceId) -> Self {
        Self {
            id,
            scheduler: Scheduler::FiveTuple,
        }
    }
}

/// A real server behind a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The backend's address; it must be on a subnet directly connected to an attached
    /// interface (L2 DSR) and hold the VIP on its loopback.
    pub address: Ipv4Addr,
    /// Relative share of new flows; 0 takes no new flows, like a drain.
    pub weight: u32,
}

impl Destination {
    /// A destination with weight 1.
    pub const fn new(address: Ipv4Addr) -> Self {
        Self { address, weight: 1 }
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
            (
                "10.0.0.1",
                ServiceId::new([10, 0, 0, 1].into(), 0, Protocol::Tcp),
            ),
            (
                "10.0.0.1:80",
                ServiceId::new([10, 0, 0, 1].into(), 80, Protocol::Tcp),
            ),
            (
                "10.0.0.1/udp",
                ServiceId::new([10, 0, 0, 1].into(), 0, Protocol::Udp),
            ),
            (
                "10.0.0.1:53/udp",
                ServiceId::new([10, 0, 0, 1].into(), 53, Protocol::Udp),
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
            "'10.0.0.300:80': '10.0.0.300' is not an IPv4 address"
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
