//! The `bgp:` section and the services' announce fields, as written and as checked.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::{Checker, earlier};
use crate::error::quote;
use crate::model::{Announce, Announcement, Bgp, BgpPeer, Service};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBgp {
    asn: Option<Spanned<u32>>,
    router_id: Option<Spanned<String>>,
    graceful_restart: Option<Spanned<String>>,
    shutdown_delay: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    next_hop_ipv6: Option<Spanned<String>>,
    peers: Option<Vec<Spanned<RawPeer>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    address: Option<Spanned<String>>,
    asn: Option<Spanned<u32>>,
    port: Option<Spanned<u16>>,
    hold_time: Option<Spanned<String>>,
    #[serde(default)]
    passive: bool,
    md5_password_file: Option<Spanned<String>>,
    next_hop: Option<Spanned<String>>,
}

/// A service's announce fields, flattened into `RawService` by hand (serde's `flatten`
/// does not mix with `deny_unknown_fields`).
#[derive(Default)]
pub(crate) struct RawAnnounce<'a> {
    pub(crate) announce: Option<Announce>,
    pub(crate) min_healthy: Option<&'a Spanned<u32>>,
    pub(crate) med: Option<u32>,
    pub(crate) local_pref: Option<u32>,
    pub(crate) communities: Option<&'a [Spanned<String>]>,
    pub(crate) large_communities: Option<&'a [Spanned<String>]>,
}

impl Checker<'_> {
    /// The `bgp:` section; `services` (as checked, `None` where invalid) tell which
    /// families are announced, so that a missing next hop is reported here.
    pub(super) fn bgp(
        &mut self,
        raw: &Spanned<RawBgp>,
        services: &[Option<Service>],
    ) -> Option<Bgp> {
        let (at, b) = (&raw.referenced, &raw.value);
        let asn = self
            .required(&b.asn, at, "bgp.asn", "asn: 65001")
            .and_then(|asn| self.asn(asn, "bgp.asn"));
        let router_id = self
            .required(&b.router_id, at, "bgp.router_id", "router_id: 10.0.2.11")
            .and_then(|id| self.ipv4(id, "bgp.router_id", "a router ID"));
        let graceful_restart = match &b.graceful_restart {
            None => Some(Some(Bgp::DEFAULT_RESTART_TIME)),
            Some(text) if text.value.trim() == "off" => Some(None),
            Some(text) => self
                .seconds(
                    text,
                    "bgp.graceful_restart",
                    1..=4095,
                    "1s to 4095s, or `off`",
                )
                .map(Some),
        };
        let shutdown_delay = match &b.shutdown_delay {
            None => Some(Bgp::DEFAULT_SHUTDOWN_DELAY),
            Some(text) => match humantime::parse_duration(text.value.trim()) {
                Ok(d) => Some(d),
                Err(_) => self.report(
                    &text.referenced,
                    "bgp.shutdown_delay",
                    format!(
                        "{} is not a duration; write a number and a unit, like 2s (0s \
                         detaches right after the withdrawal)",
                        quote(&text.value)
                    ),
                ),
            },
        };
        let any_ipv6_peer = (b.peers.iter().flatten()).any(|p| {
            (p.value.address.as_ref()).is_some_and(|a| a.value.trim().parse::<Ipv6Addr>().is_ok())
        });
        let listen = match &b.listen {
            None if any_ipv6_peer => Some(Some(Bgp::DEFAULT_LISTEN_IPV6)),
            None => Some(Some(Bgp::DEFAULT_LISTEN)),
            Some(text) if text.value.trim() == "off" => Some(None),
            Some(text) => match text.value.trim().parse::<SocketAddr>() {
                Ok(addr) => Some(Some(addr)),
                Err(_) => self.report(
                    &text.referenced,
                    "bgp.listen",
                    format!(
                        "{} is not an address and port; write one like 10.0.2.11:179, \
                         or `off` to only connect out",
                        quote(&text.value)
                    ),
                ),
            },
        };
        let next_hop_ipv6 = match &b.next_hop_ipv6 {
            None => Some(None),
            Some(text) => self.next_hop_ipv6(text).map(Some),
        };
        let peers = self
            .required(
                &b.peers,
                at,
                "bgp.peers",
                "peers: [{address: 10.0.2.1, asn: 65000}]",
            )
            .and_then(|peers| self.peers(peers, at));
        if let (Some(None), Some(raw)) = (listen, &b.peers)
            && let Some((i, peer)) = raw.iter().enumerate().find(|(_, p)| p.value.passive)
        {
            self.report::<()>(
                &peer.referenced,
                format_args!("bgp.peers[{i}].passive"),
                "a passive peer must connect to us, but bgp.listen is `off`; give bgp.listen \
                 an address or make the peer active"
                    .to_owned(),
            );
            return None;
        }
        let bgp = Bgp {
            asn: asn?,
            router_id: router_id?,
            graceful_restart: graceful_restart?,
            shutdown_delay: shutdown_delay?,
            listen: listen?,
            next_hop_ipv6: next_hop_ipv6?,
            peers: peers?,
        };
        self.next_hops(raw, &bgp, services)?;
        Some(bgp)
    }

    /// Every announced VIP needs a next hop of its family on every session: the session's
    /// own address when the families match, else a configured one.
    fn next_hops(
        &mut self,
        raw: &Spanned<RawBgp>,
        bgp: &Bgp,
        services: &[Option<Service>],
    ) -> Option<()> {
        let announced = |ipv6: bool| {
            (services.iter().enumerate()).find_map(|(i, s)| {
                let s = s.as_ref()?;
                let vip = s.vip;
                (s.announce.mode == Announce::Auto && vip.is_ipv6() == ipv6).then_some((i, vip))
            })
        };
        let mut ok = true;
        if bgp.next_hop_ipv6.is_none()
            && let Some((i, vip)) = announced(true)
            && let Some((j, peer)) =
                (bgp.peers.iter().enumerate()).find(|(_, p)| p.address.is_ipv4())
        {
            ok = false;
            self.report::<()>(
                &raw.referenced,
                "bgp.next_hop_ipv6",
                format!(
                    "required: services[{i}] announces the IPv6 VIP {vip}, and the session to \
                     bgp.peers[{j}] ({}) is IPv4, so it has no IPv6 address of ours to send; \
                     give the IPv6 address routers forward the VIP's traffic to, like \
                     `next_hop_ipv6: 2001:db8::11`",
                    peer.address
                ),
            );
        }
        if let Some((i, vip)) = announced(false) {
            let raw_peers = raw.value.peers.iter().flatten();
            for (j, (peer, raw_peer)) in bgp.peers.iter().zip(raw_peers).enumerate() {
                if peer.address.is_ipv6() && peer.next_hop.is_none() {
                    ok = false;
                    self.report::<()>(
                        &raw_peer.referenced,
                        format_args!("bgp.peers[{j}].next_hop"),
                        format!(
                            "required: services[{i}] announces the IPv4 VIP {vip}, and the \
                             session to {} is IPv6, so it has no IPv4 address of ours to \
                             send; give the IPv4 address routers forward the VIP's traffic \
                             to, like `next_hop: 10.0.2.11`",
                            peer.address
                        ),
                    );
                }
            }
        }
        ok.then_some(())
    }

    fn next_hop_ipv6(&mut self, text: &Spanned<String>) -> Option<Ipv6Addr> {
        match text.value.trim().parse::<Ipv6Addr>() {
            Ok(ip)
                if !(ip.is_unspecified()
                    || ip.is_multicast()
                    || ip.is_loopback()
                    || ip.is_unicast_link_local()
                    || ip.to_ipv4_mapped().is_some()) =>
            {
                Some(ip)
            }
            Ok(ip) => self.report(
                &text.referenced,
                "bgp.next_hop_ipv6",
                format!(
                    "{ip} cannot be the next hop; use a global unicast IPv6 address of this \
                     host (not link-local, loopback or multicast), like 2001:db8::11"
                ),
            ),
            Err(_) => self.report(
                &text.referenced,
                "bgp.next_hop_ipv6",
                format!(
                    "{} is not an IPv6 address; write one like 2001:db8::11",
                    quote(&text.value)
                ),
            ),
        }
    }

    /// A peer's address: IPv4 or IPv6 unicast, not link-local (BGP over a link-local
    /// address needs an interface, which the file cannot name).
    fn peer_address(&mut self, text: &Spanned<String>, path: &str) -> Option<IpAddr> {
        let Ok(ip) = text.value.trim().parse::<IpAddr>() else {
            return self.report(
                &text.referenced,
                path,
                format!(
                    "{} is not an IP address; write an IPv4 or IPv6 address, like 10.0.2.1 \
                     or 2001:db8::1",
                    quote(&text.value)
                ),
            );
        };
        let bad = match ip {
            IpAddr::V4(a) => a.is_unspecified() || a.is_broadcast() || a.is_multicast(),
            IpAddr::V6(a) => {
                a.is_unspecified()
                    || a.is_multicast()
                    || a.is_unicast_link_local()
                    || a.to_ipv4_mapped().is_some()
            }
        };
        if bad {
            return self.report(
                &text.referenced,
                path,
                format!(
                    "{ip} cannot be a peer; use a unicast address, like 10.0.2.1 or \
                     2001:db8::1 (link-local addresses are not supported)"
                ),
            );
        }
        Some(ip)
    }

    fn peers(&mut self, raw: &[Spanned<RawPeer>], at: &Location) -> Option<Vec<BgpPeer>> {
        if raw.is_empty() {
            return self.report(
                at,
                "bgp.peers",
                "the list is empty; name at least one router, like `peers: [{address: \
                 10.0.2.1, asn: 65000}]`, or remove the bgp section"
                    .to_owned(),
            );
        }
        let mut seen: HashMap<IpAddr, (usize, u64)> = HashMap::new();
        let mut peers = Vec::new();
        for (i, raw) in raw.iter().enumerate() {
            let (at, p) = (&raw.referenced, &raw.value);
            let path = format!("bgp.peers[{i}]");
            let address_text = self.required(
                &p.address,
                at,
                format_args!("{path}.address"),
                "address: 10.0.2.1",
            );
            let address =
                address_text.and_then(|t| self.peer_address(t, &format!("{path}.address")));
            if let (Some(text), Some(address)) = (address_text, address)
                && let Some((j, line)) = earlier(&mut seen, address, (i, text.referenced.line()))
            {
                self.report::<()>(
                    &text.referenced,
                    format_args!("{path}.address"),
                    format!(
                        "{address} is already bgp.peers[{j}] (line {line}); list each router \
                         once"
                    ),
                );
            }
            let asn = self
                .required(&p.asn, at, format_args!("{path}.asn"), "asn: 65000")
                .and_then(|asn| self.asn(asn, &format!("{path}.asn")));
            let port = match &p.port {
                None => Some(BgpPeer::DEFAULT_PORT),
                Some(port) if port.value == 0 => self.report(
                    &port.referenced,
                    format_args!("{path}.port"),
                    "0 is not a port; use 1 to 65535 (179 is BGP's)".to_owned(),
                ),
                Some(port) => Some(port.value),
            };
            let hold_time = match &p.hold_time {
                None => Some(BgpPeer::DEFAULT_HOLD_TIME),
                Some(text) => self.hold_time(text, &format!("{path}.hold_time")),
            };
            let md5_password_file = match &p.md5_password_file {
                Some(file) if file.value.trim().is_empty() => self.report(
                    &file.referenced,
                    format_args!("{path}.md5_password_file"),
                    "empty; give the path of the file holding the TCP MD5 key, or leave the \
                     field out"
                        .to_owned(),
                ),
                file => Some(file.as_ref().map(|f| PathBuf::from(&f.value))),
            };
            let next_hop = match &p.next_hop {
                None => Some(None),
                Some(text) => self
                    .ipv4(text, format_args!("{path}.next_hop"), "a next hop")
                    .map(|ip| Some(IpAddr::V4(ip))),
            };
            peers.push(Some(BgpPeer {
                address: address?,
                asn: asn?,
                port: port?,
                hold_time: hold_time?,
                passive: p.passive,
                md5_password_file: md5_password_file?,
                next_hop: next_hop?,
            }));
        }
        peers.into_iter().collect()
    }

    fn asn(&mut self, asn: &Spanned<u32>, path: &str) -> Option<u32> {
        match asn.value {
            0 | 23456 => self.report(
                &asn.referenced,
                path,
                format!(
                    "{} is reserved (RFC 7607, RFC 6793); use an AS number from 1 to \
                     4294967295, like 65001",
                    asn.value
                ),
            ),
            n => Some(n),
        }
    }

    fn hold_time(&mut self, text: &Spanned<String>, path: &str) -> Option<Duration> {
        let valid = "0s (no keepalives) or 3s to 65535s";
        let d = self.seconds(text, path, 0..=65535, valid)?;
        if d == Duration::from_secs(1) || d == Duration::from_secs(2) {
            return self.report(
                &text.referenced,
                path,
                format!(
                    "{} is too short (RFC 4271); use {valid}",
                    quote(&text.value)
                ),
            );
        }
        Some(d)
    }

    /// A duration of whole seconds within `range`, as BGP carries them.
    fn seconds(
        &mut self,
        text: &Spanned<String>,
        path: &str,
        range: std::ops::RangeInclusive<u64>,
        valid: &str,
    ) -> Option<Duration> {
        match humantime::parse_duration(text.value.trim()) {
            Ok(d) if d.subsec_nanos() == 0 && range.contains(&d.as_secs()) => Some(d),
            Ok(_) => self.report(
                &text.referenced,
                path,
                format!(
                    "{} is out of range; use whole seconds, {valid}",
                    quote(&text.value)
                ),
            ),
            Err(_) => self.report(
                &text.referenced,
                path,
                format!(
                    "{} is not a duration; write a number and a unit, like 90s ({valid})",
                    quote(&text.value)
                ),
            ),
        }
    }

    /// The announce fields of the service at `path`, which has `backends` backends.
    pub(super) fn announcement(
        &mut self,
        path: &str,
        raw: RawAnnounce<'_>,
        backends: Option<usize>,
    ) -> Option<Announcement> {
        let min_healthy = match (raw.min_healthy, backends) {
            (None, _) => Some(1),
            (Some(n), Some(count)) if n.value == 0 || n.value as usize > count => self.report(
                &n.referenced,
                format_args!("{path}.min_healthy"),
                format!(
                    "{} is out of range; the service has {count} backend{}, so use 1 to \
                     {count}",
                    n.value,
                    if count == 1 { "" } else { "s" }
                ),
            ),
            (Some(n), _) => Some(n.value),
        };
        let mut ok = true;
        let mut communities = Vec::new();
        for (i, c) in raw.communities.unwrap_or_default().iter().enumerate() {
            match parse_community(&c.value) {
                Some(c) => communities.push(c),
                None => {
                    ok = false;
                    self.report::<()>(
                        &c.referenced,
                        format_args!("{path}.communities[{i}]"),
                        format!(
                            "{} is not a community; write ASN:VALUE, two numbers from 0 to \
                             65535, like 65000:100",
                            quote(&c.value)
                        ),
                    );
                }
            }
        }
        let mut large_communities = Vec::new();
        for (i, c) in raw.large_communities.unwrap_or_default().iter().enumerate() {
            match parse_large_community(&c.value) {
                Some(c) => large_communities.push(c),
                None => {
                    ok = false;
                    self.report::<()>(
                        &c.referenced,
                        format_args!("{path}.large_communities[{i}]"),
                        format!(
                            "{} is not a large community; write GLOBAL:DATA1:DATA2, three \
                             numbers from 0 to 4294967295, like 65000:1:2",
                            quote(&c.value)
                        ),
                    );
                }
            }
        }
        ok.then_some(())?;
        Some(Announcement {
            mode: raw.announce.unwrap_or_default(),
            min_healthy: min_healthy?,
            med: raw.med,
            local_pref: raw.local_pref,
            communities,
            large_communities,
        })
    }
}

fn parse_community(text: &str) -> Option<(u16, u16)> {
    let (a, b) = text.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn parse_large_community(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.trim().split(':');
    let c = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    parts.next().is_none().then_some(c)
}
