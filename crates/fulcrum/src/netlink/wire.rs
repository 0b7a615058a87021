//! rtnetlink bytes: requests encoded and answers decoded by pure functions, testable on
//! recorded kernel messages. Nothing the kernel (or anyone) sends can make them panic.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libc::RTN_UNICAST;
use libc::{NDA_DST, NDA_LLADDR, RTA_GATEWAY, RTA_OIF, RTA_PREFSRC, RTN_LOCAL};

use super::{Link, Neighbour, NetlinkError, Route, RouteKind, VlanLink};

// Values from linux/netlink.h, rtnetlink.h, if_link.h and neighbour.h that libc lacks or
// types as c_int.
pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_DONE: u16 = 3;
const NLMSG_MIN_TYPE: u16 = 0x10;
pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
pub(super) const NLM_F_DUMP: u16 = 0x300;
pub(super) const NLM_F_CREATE: u16 = 0x400;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_INET6_CONF: u16 = 2;
/// Index of the IPv6 MTU in IFLA_INET6_CONF's array of s32 (`DEVCONF_MTU6`).
const DEVCONF_MTU6: usize = 2;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VLAN_ID: u16 = 1;
const IFLA_VLAN_PROTOCOL: u16 = 5;
/// 802.1Q's TPID; 802.1ad (QinQ) sub-interfaces are not VLAN links to the data plane.
const ETH_P_8021Q: u16 = 0x8100;
const RTA_METRICS: u16 = 8;
const RTA_VIA: u16 = 18;
const RTAX_MTU: u16 = 2;
pub(super) const NDA_FLAGS_EXT: u16 = 15;
pub(super) const NTF_EXT_MANAGED: u32 = 0x01;
/// Attribute types carry two flag bits (nested, net byte order) above the type proper.
const NLA_TYPE_MASK: u16 = 0x3fff;
pub(super) const AF_INET: u8 = libc::AF_INET as u8;
pub(super) const AF_INET6: u8 = libc::AF_INET6 as u8;
pub(super) const NLMSG_HDRLEN: usize = 16;
const RTA_HDRLEN: usize = 4;

// ---- Encoding ----

/// One request: nlmsghdr, the family header (`rtmsg`, ...), then attributes, 4-byte aligned.
pub(super) fn encode(
    ty: u16,
    flags: u16,
    seq: u32,
    header: &[u8],
    attrs: &[(u16, &[u8])],
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set below
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills it in
    buf.extend_from_slice(header);
    buf.resize(align(buf.len()), 0);
    for (ty, data) in attrs {
        // Our attributes are a few bytes: the length fits rta_len.
        buf.extend_from_slice(&((RTA_HDRLEN + data.len()) as u16).to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(data);
        buf.resize(align(buf.len()), 0);
    }
    let len = buf.len() as u32;
    buf[0..4].copy_from_slice(&len.to_ne_bytes());
    buf
}

/// The address family byte and the address's bytes, as netlink carries both.
pub(super) fn family(addr: IpAddr) -> (u8, Vec<u8>) {
    match addr {
        IpAddr::V4(a) => (AF_INET, a.octets().to_vec()),
        IpAddr::V6(a) => (AF_INET6, a.octets().to_vec()),
    }
}

/// `struct rtmsg` asking about one host of `addr`'s family.
pub(super) fn rtmsg(addr: IpAddr) -> [u8; 12] {
    let mut m = [0; 12];
    m[0] = family(addr).0; // rtm_family
    m[1] = if addr.is_ipv4() { 32 } else { 128 }; // rtm_dst_len
    m
}

/// `struct ndmsg` for an entry of family `af` (AF_UNSPEC, 0, dumps both).
pub(super) fn ndmsg(af: u8, ifindex: u32, state: u16, flags: u8) -> [u8; 12] {
    let mut m = [0; 12];
    m[0] = af; // ndm_family
    m[4..8].copy_from_slice(&ifindex.to_ne_bytes()); // ndm_ifindex
    m[8..10].copy_from_slice(&state.to_ne_bytes()); // ndm_state
    m[10] = flags; // ndm_flags
    m
}

/// `struct ifinfomsg` naming one interface.
pub(super) fn ifinfomsg(index: u32) -> [u8; 16] {
    let mut m = [0; 16];
    m[4..8].copy_from_slice(&index.to_ne_bytes()); // ifi_index
    m
}

// ---- Decoding ----

fn align(len: usize) -> usize {
    len.saturating_add(3) & !3
}

fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

pub(super) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    array(b, at).map(u16::from_ne_bytes)
}

pub(super) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    array(b, at).map(u32::from_ne_bytes)
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    array(b, at).map(i32::from_ne_bytes)
}

fn u32_attr(data: &[u8]) -> Result<u32, NetlinkError> {
    u32_at(data, 0).ok_or(NetlinkError::Malformed("u32 attribute too short"))
}

/// An address attribute of family `af`: 4 bytes for AF_INET, 16 for AF_INET6.
fn ip_attr(af: u8, data: &[u8]) -> Result<IpAddr, NetlinkError> {
    match af {
        AF_INET => <[u8; 4]>::try_from(data)
            .map(|o| Ipv4Addr::from(o).into())
            .map_err(|_| NetlinkError::Malformed("IPv4 attribute not 4 bytes")),
        AF_INET6 => <[u8; 16]>::try_from(data)
            .map(|o| Ipv6Addr::from(o).into())
            .map_err(|_| NetlinkError::Malformed("IPv6 attribute not 16 bytes")),
        _ => Err(NetlinkError::Malformed("address of an unknown family")),
    }
}

/// RTA_VIA (`struct rtvia`: a u16 family, then the address): a next hop of the other family,
/// as IPv4 routes through IPv6 routers (RFC 8950) carry it.
fn via_attr(data: &[u8]) -> Result<IpAddr, NetlinkError> {
    let af = u16_at(data, 0).ok_or(NetlinkError::Malformed("truncated RTA_VIA"))?;
    let af = u8::try_from(af).map_err(|_| NetlinkError::Malformed("RTA_VIA family"))?;
    ip_attr(af, data.get(2..).unwrap_or_default())
}

/// The parts of an nlmsghdr we act on.
#[derive(Clone, Copy, Debug)]
pub(super) struct Header {
    pub(super) ty: u16,
    pub(super) seq: u32,
}

/// Splits a TLV whose header is `hdr` bytes and total length `len` off the front of `b`:
/// its body, and what follows its padding.
fn split<'a>(b: &'a [u8], hdr: usize, len: usize, what: &'static str) -> Split<'a, &'a [u8]> {
    let body = if len < hdr { None } else { b.get(hdr..len) };
    let body = body.ok_or(NetlinkError::Malformed(what))?;
    Ok((body, b.get(align(len)..).unwrap_or_default()))
}

pub(super) type Split<'a, T> = Result<(T, &'a [u8]), NetlinkError>;

pub(super) fn message(b: &[u8]) -> Split<'_, (Header, &[u8])> {
    let (Some(len), Some(ty), Some(seq)) = (u32_at(b, 0), u16_at(b, 4), u32_at(b, 8)) else {
        return Err(NetlinkError::Malformed("truncated nlmsghdr"));
    };
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let (payload, rest) = split(b, NLMSG_HDRLEN, len, "bad nlmsg_len")?;
    Ok(((Header { ty, seq }, payload), rest))
}

pub(super) fn attr(b: &[u8]) -> Split<'_, (u16, &[u8])> {
    let (Some(len), Some(ty)) = (u16_at(b, 0), u16_at(b, 2)) else {
        return Err(NetlinkError::Malformed("truncated rtattr"));
    };
    let (data, rest) = split(b, RTA_HDRLEN, usize::from(len), "bad rta_len")?;
    Ok(((ty & NLA_TYPE_MASK, data), rest))
}

/// Splits `b` into consecutive TLVs (messages or attributes) with `one`.
pub(super) fn tlvs<'a, T>(
    mut b: &'a [u8],
    one: fn(&'a [u8]) -> Split<'a, T>,
) -> Result<Vec<T>, NetlinkError> {
    let mut all = Vec::new();
    while !b.is_empty() {
        let (item, rest) = one(b)?;
        all.push(item);
        b = rest;
    }
    Ok(all)
}

/// A message's fixed family header (`rtmsg`, `ndmsg`, ...) and the attributes after it.
fn family_header<const N: usize>(payload: &[u8]) -> Split<'_, [u8; N]> {
    let header = array(payload, 0).ok_or(NetlinkError::Malformed("truncated family header"))?;
    Ok((header, payload.get(align(N)..).unwrap_or_default()))
}

/// What one answer message means for the request it answers.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reply {
    Data,
    Skip,
    End,
}

pub(super) fn reply(request: &'static str, ty: u16, payload: &[u8]) -> Result<Reply, NetlinkError> {
    let refused = |errno: i32| NetlinkError::Kernel {
        request,
        source: io::Error::from_raw_os_error(errno.saturating_neg()),
    };
    match ty {
        NLMSG_ERROR => match i32_at(payload, 0) {
            Some(0) => Ok(Reply::End), // the ACK
            Some(errno) => Err(refused(errno)),
            None => Err(NetlinkError::Malformed("truncated NLMSG_ERROR")),
        },
        // A dump's NLMSG_DONE carries the dump's result.
        NLMSG_DONE => match i32_at(payload, 0) {
            Some(errno) if errno < 0 => Err(refused(errno)),
            _ => Ok(Reply::End),
        },
        ty if ty < NLMSG_MIN_TYPE => Ok(Reply::Skip), // NLMSG_NOOP, NLMSG_OVERRUN
        _ => Ok(Reply::Data),
    }
}

/// Takes the answers to request `seq` out of one datagram: the payloads of messages of type
/// `answer` go to `answers`. True once the request is answered (the ACK, an error or the
/// dump's NLMSG_DONE). Messages with another sequence number (late answers to an earlier
/// request) are skipped.
pub(super) fn collect(
    datagram: &[u8],
    seq: u32,
    request: &'static str,
    answer: u16,
    answers: &mut Vec<Vec<u8>>,
) -> Result<bool, NetlinkError> {
    for (hdr, payload) in tlvs(datagram, message)? {
        if hdr.seq != seq {
            continue;
        }
        match reply(request, hdr.ty, payload)? {
            Reply::End => return Ok(true),
            Reply::Data if hdr.ty == answer => answers.push(payload.to_vec()),
            Reply::Data | Reply::Skip => {}
        }
    }
    Ok(false)
}

/// An RTM_NEWROUTE answer to `route_get`, IPv4 or IPv6.
pub(super) fn parse_route(payload: &[u8]) -> Result<Route, NetlinkError> {
    let (rtm, rest) = family_header::<12>(payload)?;
    let af = rtm[0];
    let kind = match rtm[7] {
        RTN_UNICAST => RouteKind::Unicast,
        RTN_LOCAL => RouteKind::Local,
        other => RouteKind::Other(other),
    };
    let mut route = Route {
        ifindex: 0,
        gateway: None,
        prefsrc: None,
        kind,
        mtu: None,
    };
    for (ty, data) in tlvs(rest, attr)? {
        match ty {
            RTA_OIF => route.ifindex = u32_attr(data)?,
            RTA_GATEWAY => route.gateway = Some(ip_attr(af, data)?),
            RTA_VIA => route.gateway = Some(via_attr(data)?),
            RTA_PREFSRC => route.prefsrc = Some(ip_attr(af, data)?),
            RTA_METRICS => {
                let mtu = tlvs(data, attr)?.into_iter().find(|(t, _)| *t == RTAX_MTU);
                route.mtu = mtu.map(|(_, d)| u32_attr(d)).transpose()?;
            }
            _ => {}
        }
    }
    Ok(route)
}

/// An RTM_NEWLINK: name, MAC, MTU, and the VLAN it is a sub-interface for, if any.
pub(super) fn parse_link(payload: &[u8]) -> Result<Link, NetlinkError> {
    let (ifi, rest) = family_header::<16>(payload)?;
    let index = u32::from_ne_bytes([ifi[4], ifi[5], ifi[6], ifi[7]]);
    let (mut name, mut mac, mut mtu, mut mtu6) = (None, None, 0, None);
    let (mut parent, mut vlan_id, mut foreign_parent) = (None, None, false);
    for (ty, data) in tlvs(rest, attr)? {
        match ty {
            IFLA_IFNAME => {
                let bytes = data.split(|&b| b == 0).next().unwrap_or_default();
                name = Some(String::from_utf8_lossy(bytes).into_owned());
            }
            IFLA_ADDRESS => mac = data.try_into().ok(),
            IFLA_MTU => mtu = u32_attr(data)?,
            IFLA_LINK => parent = Some(u32_attr(data)?),
            // The parent's index is then one of another namespace: useless here.
            IFLA_LINK_NETNSID => foreign_parent = true,
            IFLA_LINKINFO => vlan_id = vlan_info(data)?,
            IFLA_AF_SPEC => mtu6 = ipv6_mtu(data)?,
            _ => {}
        }
    }
    let name = name.ok_or(NetlinkError::Malformed("link without IFLA_IFNAME"))?;
    let vlan = match (parent, vlan_id) {
        (Some(parent), Some(id)) if parent != 0 && !foreign_parent => Some(VlanLink { parent, id }),
        _ => None,
    };
    Ok(Link {
        index,
        name,
        mac,
        mtu,
        mtu6,
        vlan,
    })
}

/// The link's IPv6 MTU in IFLA_AF_SPEC (AF_INET6, IFLA_INET6_CONF, `DEVCONF_MTU6`): what
/// `net.ipv6.conf.IFACE.mtu` or a router advertisement's MTU option set, which the kernel
/// uses for IPv6 instead of IFLA_MTU. `None` without IPv6 on the link.
fn ipv6_mtu(af_spec: &[u8]) -> Result<Option<u32>, NetlinkError> {
    let Some((_, inet6)) = tlvs(af_spec, attr)?
        .into_iter()
        .find(|(ty, _)| *ty == u16::from(AF_INET6))
    else {
        return Ok(None);
    };
    let conf = tlvs(inet6, attr)?
        .into_iter()
        .find(|(ty, _)| *ty == IFLA_INET6_CONF);
    Ok(conf
        .and_then(|(_, c)| u32_at(c, DEVCONF_MTU6 * 4))
        .filter(|m| *m != 0))
}

/// The VLAN id in IFLA_LINKINFO when IFLA_INFO_KIND is "vlan" and the protocol 802.1Q.
fn vlan_info(linkinfo: &[u8]) -> Result<Option<u16>, NetlinkError> {
    let info = tlvs(linkinfo, attr)?;
    let is_vlan = info
        .iter()
        .any(|(ty, d)| *ty == IFLA_INFO_KIND && d.split(|&b| b == 0).next() == Some(b"vlan"));
    let Some((_, data)) = info.iter().find(|(ty, _)| *ty == IFLA_INFO_DATA) else {
        return Ok(None);
    };
    if !is_vlan {
        return Ok(None);
    }
    let (mut id, mut dot1q) = (None, true);
    for (ty, d) in tlvs(data, attr)? {
        match ty {
            IFLA_VLAN_ID => id = Some(u16_at(d, 0).ok_or(NetlinkError::Malformed("IFLA_VLAN_ID"))?),
            // Network byte order, unlike the other integers here.
            IFLA_VLAN_PROTOCOL => dot1q = array(d, 0).map(u16::from_be_bytes) == Some(ETH_P_8021Q),
            _ => {}
        }
    }
    Ok(id.filter(|_| dot1q))
}

/// An IPv4 or IPv6 neighbour entry, or `None` for other families (bridge FDB, ...).
pub(super) fn parse_neighbour(payload: &[u8]) -> Result<Option<Neighbour>, NetlinkError> {
    let (ndm, rest) = family_header::<12>(payload)?;
    let af = ndm[0];
    if af != AF_INET && af != AF_INET6 {
        return Ok(None);
    }
    let ifindex = u32::from_ne_bytes([ndm[4], ndm[5], ndm[6], ndm[7]]);
    let state = u16::from_ne_bytes([ndm[8], ndm[9]]);
    let (mut addr, mut mac) = (None, None);
    for (ty, data) in tlvs(rest, attr)? {
        match ty {
            NDA_DST => addr = Some(ip_attr(af, data)?),
            NDA_LLADDR => mac = data.try_into().ok(),
            _ => {}
        }
    }
    let addr = addr.ok_or(NetlinkError::Malformed("neighbour without NDA_DST"))?;
    Ok(Some(Neighbour {
        ifindex,
        addr,
        mac,
        state,
    }))
}
