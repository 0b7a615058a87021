//! Addresses of either family, the forwarding mode with its tunnel fields, and the family
//! rules between a VIP and its backends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::Checker;
use crate::error::quote;
use crate::model::{Forwarding, Tunnel, TunnelSource};

/// `tunnel_source` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTunnelSource {
    ipv4: Option<Spanned<String>>,
    ipv6: Option<Spanned<String>>,
}

/// The fields of a service that say how it forwards.
pub(super) struct RawForwarding<'a> {
    pub(super) forwarding: Option<&'a Spanned<String>>,
    pub(super) gue_port: Option<&'a Spanned<u16>>,
    pub(super) tunnel_source: Option<&'a Spanned<RawTunnelSource>>,
}

/// Shortest IPv6 per-flow prefix: the data plane varies only the last 32 bits.
const MIN_IPV6_PREFIX: u8 = 96;
/// Shortest IPv4 per-flow prefix: a source range wider than a /8 is a typo.
const MIN_IPV4_PREFIX: u8 = 8;

impl Checker<'_> {
    /// A VIP or backend address of either family, unicast and usable without a scope.
    pub(super) fn address(
        &mut self,
        text: &Spanned<String>,
        path: impl std::fmt::Display,
        what: &str,
    ) -> Option<IpAddr> {
        let value = text.value.trim();
        let Ok(ip) = value.parse::<IpAddr>() else {
            return self.report(
                &text.referenced,
                path,
                format!(
                    "{} is not an IP address; write an IPv4 address like 10.66.0.11 or an IPv6 \
                     address like 2001:db8::11",
                    quote(&text.value)
                ),
            );
        };
        match unusable(ip) {
            None => Some(ip),
            Some(why) => self.report(
                &text.referenced,
                path,
                format!("{ip} cannot be {what}; {why}"),
            ),
        }
    }

    /// `forwarding`, `gue_port` and `tunnel_source`; tunnel fields on a mode that does not
    /// take them are problems, not ignored.
    pub(super) fn forwarding(&mut self, path: &str, raw: RawForwarding<'_>) -> Option<Forwarding> {
        let mode = match raw.forwarding {
            None => "l2-dsr",
            Some(m) => match m.value.trim() {
                mode @ ("l2-dsr" | "ipip" | "gue") => mode,
                _ => {
                    return self.report(
                        &m.referenced,
                        format_args!("{path}.forwarding"),
                        format!(
                            "{} is not a forwarding mode; use l2-dsr (the default), ipip or gue",
                            quote(&m.value)
                        ),
                    );
                }
            },
        };
        let mut ok = true;
        if let Some(port) = raw.gue_port
            && mode != "gue"
        {
            ok = false;
            self.report::<()>(
                &port.referenced,
                format_args!("{path}.gue_port"),
                format!(
                    "only `forwarding: gue` takes `gue_port`, and this service is {mode}; \
                     remove it"
                ),
            );
        }
        if let Some(source) = raw.tunnel_source
            && mode == "l2-dsr"
        {
            ok = false;
            self.report::<()>(
                &source.referenced,
                format_args!("{path}.tunnel_source"),
                "only `forwarding: ipip` and `gue` take `tunnel_source`, and this service is \
                 l2-dsr (its packets keep the client's source); remove it, or set `forwarding`"
                    .to_owned(),
            );
        }
        let tunnel = match raw.tunnel_source {
            Some(source) if mode != "l2-dsr" => self.tunnel(path, &source.value),
            _ => Some(Tunnel::default()),
        };
        let port = match raw.gue_port {
            Some(p) if p.value == 0 => self.report(
                &p.referenced,
                format_args!("{path}.gue_port"),
                format!(
                    "0 is not a UDP port; use 1 to 65535, the port the backends decapsulate \
                     on ({} by default)",
                    Forwarding::DEFAULT_GUE_PORT
                ),
            ),
            Some(p) => Some(p.value),
            None => Some(Forwarding::DEFAULT_GUE_PORT),
        };
        let (tunnel, port) = (tunnel?, port?);
        let forwarding = match mode {
            "ipip" => Forwarding::Ipip(tunnel),
            "gue" => Forwarding::Gue { tunnel, port },
            _ => Forwarding::L2Dsr,
        };
        ok.then_some(forwarding)
    }

    fn tunnel(&mut self, path: &str, raw: &RawTunnelSource) -> Option<Tunnel> {
        let path = format!("{path}.tunnel_source");
        let ipv4 = match &raw.ipv4 {
            None => Some(TunnelSource::Route),
            Some(text) => self.source(text, &format!("{path}.ipv4"), false),
        };
        let ipv6 = match &raw.ipv6 {
            None => Some(TunnelSource::Route),
            Some(text) => self.source(text, &format!("{path}.ipv6"), true),
        };
        Some(Tunnel {
            ipv4: ipv4?,
            ipv6: ipv6?,
        })
    }

    /// One outer source: an address of the family, or a prefix without host bits.
    fn source(&mut self, text: &Spanned<String>, path: &str, v6: bool) -> Option<TunnelSource> {
        let (family, example, prefix_example, min) = match v6 {
            false => ("IPv4", "192.0.2.5", "192.0.2.0/28", MIN_IPV4_PREFIX),
            true => ("IPv6", "2001:db8::5", "2001:db8::/112", MIN_IPV6_PREFIX),
        };
        let at = &text.referenced;
        let value = text.value.trim();
        let (address, len) = match value.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (value, None),
        };
        let valid = format!(
            "write an {family} address like {example} (every packet from it), or a prefix like \
             {prefix_example} (a source per flow)"
        );
        let Some(ip) = address
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| ip.is_ipv6() == v6)
        else {
            return self.report(
                at,
                path,
                format!("{} is not an {family} address; {valid}", quote(&text.value)),
            );
        };
        let max = if v6 { 128 } else { 32 };
        let len = match len.map(|l| l.parse::<u8>()) {
            None => {
                return match unusable(ip) {
                    None => Some(TunnelSource::Fixed(ip)),
                    Some(why) => {
                        self.report(at, path, format!("{ip} cannot be a tunnel source; {why}"))
                    }
                };
            }
            Some(Ok(len)) if (min..=max).contains(&len) => len,
            Some(_) => {
                return self.report(
                    at,
                    path,
                    format!(
                        "{} has no valid prefix length; use /{min} to /{max} ({})",
                        quote(&text.value),
                        match v6 {
                            true => "per-flow sources vary the last 32 bits only",
                            false => "a source range wider than a /8 is not one network",
                        }
                    ),
                );
            }
        };
        let network = mask(ip, len);
        if network != ip {
            return self.report(
                at,
                path,
                format!(
                    "{} has host bits set; the network of a /{len} around it is {network}/{len}",
                    quote(&text.value)
                ),
            );
        }
        if let Some(why) = unusable(ip) {
            return self.report(at, path, format!("{ip} cannot be a tunnel source; {why}"));
        }
        Some(TunnelSource::Prefix { network, len })
    }

    /// The family rule between a VIP and one backend, under the service's mode.
    pub(super) fn family(
        &mut self,
        at: &Location,
        path: &str,
        vip: IpAddr,
        backend: IpAddr,
        forwarding: &Forwarding,
    ) {
        let message = match (vip, backend, forwarding) {
            (IpAddr::V4(_), IpAddr::V4(_), _) | (IpAddr::V6(_), IpAddr::V6(_), _) => return,
            (IpAddr::V6(_), IpAddr::V4(_), Forwarding::L2Dsr) => format!(
                "{backend} is IPv4, but the VIP {vip} is IPv6; an IPv6 VIP needs IPv6 backends"
            ),
            (IpAddr::V6(_), IpAddr::V4(_), _) => format!(
                "{backend} is IPv4, but the VIP {vip} is IPv6; an IPv6 packet is not tunnelled \
                 in IPv4 (only 4in4, 6in6 and 4in6), so give the service IPv6 backends"
            ),
            (IpAddr::V4(_), IpAddr::V6(_), Forwarding::L2Dsr) => format!(
                "{backend} is IPv6, but the VIP {vip} is IPv4; with `forwarding: l2-dsr` the \
                 backends have the VIP's family (`forwarding: ipip` or `gue` tunnels IPv4 to \
                 IPv6 backends)"
            ),
            (IpAddr::V4(_), IpAddr::V6(_), _) => return,
        };
        self.report::<()>(at, path, message);
    }
}

/// Why `ip` cannot be a VIP, backend or tunnel source, if it cannot.
fn unusable(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() => {
            Some("use a unicast address, like 10.66.0.11")
        }
        IpAddr::V4(_) => None,
        IpAddr::V6(ip) if ip.is_unspecified() || ip.is_multicast() => {
            Some("use a unicast address, like 2001:db8::11")
        }
        IpAddr::V6(ip) if ip.is_unicast_link_local() => {
            Some("link-local addresses need an interface; use a global or unique local address")
        }
        IpAddr::V6(ip) if ip.to_ipv4_mapped().is_some() => {
            Some("it is an IPv4 address in IPv6 form; write the IPv4 address itself")
        }
        IpAddr::V6(_) => None,
    }
}

/// `ip` with everything after the first `len` bits cleared.
fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(ip) => {
            let bits = u32::from(ip) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits))
        }
        IpAddr::V6(ip) => {
            let bits = u128::from(ip) & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}
