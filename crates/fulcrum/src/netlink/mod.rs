//! Route, link and neighbour lookups over raw rtnetlink.
//!
//! To forward to a backend the data plane needs the egress interface and the next hop's MAC.
//! The kernel already keeps both current (route and neighbour tables), so we ask it rather than
//! run our own ARP. Requests are synchronous, one at a time, on one socket. Bytes are encoded and
//! decoded by small pure functions, testable without a kernel; nothing the kernel sends can make
//! them panic.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use libc::{NDA_DST, NDA_LLADDR, NTF_USE, RTA_DST, RTA_GATEWAY, RTA_OIF, RTA_PREFSRC};
use libc::{NUD_DELAY, NUD_NOARP, NUD_NONE, NUD_PERMANENT, NUD_PROBE, NUD_REACHABLE, NUD_STALE};
use libc::{RTM_DELNEIGH, RTM_GETLINK, RTM_GETNEIGH, RTM_GETROUTE, RTM_NEWLINK, RTM_NEWNEIGH};
use libc::{RTM_NEWROUTE, RTN_LOCAL, RTN_UNICAST};

// Values from linux/netlink.h, if_link.h and neighbour.h that libc lacks or types as c_int.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_MIN_TYPE: u16 = 0x10;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const NDA_FLAGS_EXT: u16 = 15;
const NTF_EXT_MANAGED: u32 = 0x01;
/// Attribute types carry two flag bits (nested, net byte order) above the type proper.
const NLA_TYPE_MASK: u16 = 0x3fff;
const AF_INET: u8 = libc::AF_INET as u8;
const NLMSG_HDRLEN: usize = 16;
const RTA_HDRLEN: usize = 4;

/// An rtnetlink socket: it answers for the network namespace it was opened in, so the data
/// plane sees the routes and neighbours of its own namespace.
pub struct Netlink {
    fd: OwnedFd,
    /// Sequence number of the last request; replies carrying another one are stale.
    seq: u32,
    buf: Vec<u8>,
}

/// Where the kernel would send a packet for one destination, as `ip route get` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Egress interface index; 0 when the kernel names none (e.g. blackhole routes).
    pub oif: u32,
    /// Next hop when it is not the destination itself: the neighbour to resolve.
    pub gateway: Option<Ipv4Addr>,
    /// Local destinations must not be forwarded to.
    pub kind: RouteKind,
    /// The source address the kernel would pick, usable as the encapsulation source.
    pub prefsrc: Option<Ipv4Addr>,
}

/// The route type (`rtm_type`), so callers can refuse local or unreachable destinations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// Reachable through an interface (RTN_UNICAST).
    Unicast,
    /// An address of this host (RTN_LOCAL).
    Local,
    /// Any other `rtm_type` (broadcast, blackhole, ...), kept raw.
    Other(u8),
}

/// One interface: its name for logs and its MAC, the source of frames sent out of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address, when it is a 6-byte (Ethernet) one.
    pub mac: Option<[u8; 6]>,
}

/// One IPv4 neighbour (ARP) entry: the MAC to put in frames sent to `addr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// Interface the entry belongs to.
    pub ifindex: u32,
    /// The neighbour's IPv4 address.
    pub addr: Ipv4Addr,
    /// The neighbour's MAC, when known and 6 bytes long.
    pub mac: Option<[u8; 6]>,
    /// NUD state bits (`NUD_REACHABLE`, ...), as the kernel reports them.
    pub state: u16,
}

impl Neighbour {
    /// True when the MAC can be used to forward: state REACHABLE, STALE, DELAY, PROBE, PERMANENT
    /// or NOARP and a non-zero 6-byte MAC.
    pub fn usable(&self) -> bool {
        const USABLE: u16 =
            NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP;
        self.state & USABLE != 0 && self.mac.is_some_and(|mac| mac != [0; 6])
    }

    /// Static entries belong to an administrator: never ours to delete.
    fn is_static(&self) -> bool {
        self.state & (NUD_PERMANENT | NUD_NOARP) != 0
    }
}

/// Why a netlink request failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// A syscall failed: names the call.
    #[error("netlink {call} failed")]
    Io {
        /// The syscall.
        call: &'static str,
        /// What the syscall returned.
        #[source]
        source: io::Error,
    },
    /// The kernel answered a request with an error (NLMSG_ERROR with errno): names the request.
    #[error("kernel refused netlink {request}")]
    Kernel {
        /// The request message type, e.g. "RTM_GETROUTE".
        request: &'static str,
        /// The errno the kernel sent.
        #[source]
        source: io::Error,
    },
    /// The kernel has no route to this destination (ENETUNREACH or EHOSTUNREACH).
    #[error("no route to {0}")]
    NoRoute(Ipv4Addr),
    /// The kernel sent bytes that do not parse; says what was wrong.
    #[error("malformed netlink message: {0}")]
    Malformed(&'static str),
}

impl NetlinkError {
    fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's current network namespace (it stays bound to it).
    pub fn open() -> Result<Self, NetlinkError> {
        let (domain, ty) = (libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC);
        // SAFETY: plain syscall with constant arguments.
        let fd = unsafe { libc::socket(domain, ty, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(NetlinkError::Io {
                call: "socket",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let buf = vec![0; 64 * 1024];
        Ok(Self { fd, seq: 0, buf })
    }

    /// Like `ip route get DST`: RTM_GETROUTE with RTA_DST, family AF_INET, dst_len 32.
    pub fn route_get(&mut self, dst: Ipv4Addr) -> Result<Route, NetlinkError> {
        let attrs = [(RTA_DST, &dst.octets()[..])];
        match self.request(RTM_GETROUTE, NLM_F_ACK, &rtmsg(), &attrs, RTM_NEWROUTE) {
            Ok(answers) => parse_route(first(&answers)?),
            Err(e) if matches!(e.errno(), Some(libc::ENETUNREACH | libc::EHOSTUNREACH)) => {
                Err(NetlinkError::NoRoute(dst))
            }
            Err(e) => Err(e),
        }
    }

    /// RTM_GETLINK for one index: its name and MAC (IFLA_IFNAME, IFLA_ADDRESS).
    pub fn link(&mut self, ifindex: u32) -> Result<Link, NetlinkError> {
        let header = ifinfomsg(ifindex);
        let answers = self.request(RTM_GETLINK, NLM_F_ACK, &header, &[], RTM_NEWLINK)?;
        parse_link(first(&answers)?)
    }

    /// RTM_GETNEIGH dump, AF_INET only.
    pub fn neighbours(&mut self) -> Result<Vec<Neighbour>, NetlinkError> {
        // A dump the kernel flags NLM_F_DUMP_INTR (table changed meanwhile) may miss entries;
        // callers re-read periodically, so the next dump catches up.
        let header = ndmsg(0, NUD_NONE, 0);
        let answers = self.request(RTM_GETNEIGH, NLM_F_DUMP, &header, &[], RTM_NEWNEIGH)?;
        let parsed = answers.iter().map(|a| parse_neighbour(a));
        parsed.filter_map(Result::transpose).collect()
    }

    /// Asks the kernel to resolve `addr` on `ifindex` and keep it resolved: RTM_NEWNEIGH with
    /// the kernel-managed flag (NDA_FLAGS_EXT = NTF_EXT_MANAGED, kernel >= 5.16; state NUD_NONE,
    /// NLM_F_CREATE) and, as a one-shot trigger that works on any kernel, NTF_USE. An entry that
    /// is already usable is left alone, so static entries are never overwritten.
    pub fn request_resolution(&mut self, ifindex: u32, addr: Ipv4Addr) -> Result<(), NetlinkError> {
        if self.neighbour(ifindex, addr)?.is_some_and(|n| n.usable()) {
            return Ok(());
        }
        // Kernels before 5.16 ignore NDA_FLAGS_EXT (beyond their NDA_MAX) and act on NTF_USE.
        let managed = NTF_EXT_MANAGED.to_ne_bytes();
        let attrs = [(NDA_DST, &addr.octets()[..]), (NDA_FLAGS_EXT, &managed[..])];
        let header = ndmsg(ifindex, NUD_NONE, NTF_USE);
        self.request(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE, &header, &attrs, 0)?;
        Ok(())
    }

    /// Deletes an entry this process created with request_resolution (RTM_DELNEIGH), so nothing
    /// is left behind at exit. ENOENT is not an error; static (PERMANENT, NOARP) entries are
    /// never ours and are left in place.
    pub fn forget(&mut self, ifindex: u32, addr: Ipv4Addr) -> Result<(), NetlinkError> {
        if self.neighbour(ifindex, addr)?.is_none_or(|n| n.is_static()) {
            return Ok(());
        }
        let attrs = [(NDA_DST, &addr.octets()[..])];
        match self.request(RTM_DELNEIGH, NLM_F_ACK, &ndmsg(ifindex, 0, 0), &attrs, 0) {
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            result => result.map(drop),
        }
    }

    /// One neighbour entry (RTM_GETNEIGH for one address), `None` when there is none:
    /// cheaper than a dump when resolving one backend.
    pub fn neighbour(
        &mut self,
        ifindex: u32,
        addr: Ipv4Addr,
    ) -> Result<Option<Neighbour>, NetlinkError> {
        let (header, attrs) = (ndmsg(ifindex, 0, 0), [(NDA_DST, &addr.octets()[..])]);
        match self.request(RTM_GETNEIGH, NLM_F_ACK, &header, &attrs, RTM_NEWNEIGH) {
            Ok(answers) => parse_neighbour(first(&answers)?),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends one request and collects the payloads of the answers of type `answer` until the
    /// ACK, the error or NLMSG_DONE. Messages with another sequence number (late answers to
    /// an earlier request) are skipped.
    fn request(
        &mut self,
        ty: u16,
        flags: u16,
        header: &[u8],
        attrs: &[(u16, &[u8])],
        answer: u16,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.send(&encode(ty, NLM_F_REQUEST | flags, seq, header, attrs))?;
        let mut answers = Vec::new();
        loop {
            let len = self.recv()?;
            for (hdr, payload) in tlvs(self.buf.get(..len).unwrap_or_default(), message)? {
                if hdr.seq != seq {
                    continue;
                }
                match reply(request_name(ty), hdr.ty, payload)? {
                    Reply::End => return Ok(answers),
                    Reply::Data if hdr.ty == answer => answers.push(payload.to_vec()),
                    Reply::Data | Reply::Skip => {}
                }
            }
        }
    }

    fn send(&self, msg: &[u8]) -> Result<(), NetlinkError> {
        // SAFETY: pointer and length describe `msg`, which outlives the call.
        let send = || unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        retry("send", send).map(drop)
    }

    /// Receives one datagram into `self.buf`, growing it first if the datagram is larger.
    fn recv(&mut self) -> Result<usize, NetlinkError> {
        let fd = self.fd.as_raw_fd();
        let (ptr, cap) = (self.buf.as_mut_ptr().cast(), self.buf.len());
        // SAFETY: pointer and length describe `self.buf`, which outlives the call.
        let len = retry("recv", || unsafe {
            libc::recv(fd, ptr, cap, libc::MSG_PEEK | libc::MSG_TRUNC)
        })?;
        self.buf.resize(len.max(self.buf.len()), 0);
        let (ptr, cap) = (self.buf.as_mut_ptr().cast(), self.buf.len());
        // SAFETY: as above, after the resize.
        retry("recv", || unsafe { libc::recv(fd, ptr, cap, 0) })
    }
}

/// Runs a send/recv-like syscall, retrying on EINTR; its result when not negative.
fn retry(call: &'static str, mut syscall: impl FnMut() -> isize) -> Result<usize, NetlinkError> {
    loop {
        if let Ok(n) = usize::try_from(syscall()) {
            return Ok(n);
        }
        let source = io::Error::last_os_error();
        if source.kind() != io::ErrorKind::Interrupted {
            return Err(NetlinkError::Io { call, source });
        }
    }
}

/// The request's name for errors.
fn request_name(ty: u16) -> &'static str {
    match ty {
        RTM_GETLINK => "RTM_GETLINK",
        RTM_GETROUTE => "RTM_GETROUTE",
        RTM_NEWNEIGH => "RTM_NEWNEIGH",
        RTM_DELNEIGH => "RTM_DELNEIGH",
        RTM_GETNEIGH => "RTM_GETNEIGH",
        _ => "request",
    }
}

fn first(answers: &[Vec<u8>]) -> Result<&[u8], NetlinkError> {
    answers
        .first()
        .map(Vec::as_slice)
        .ok_or(NetlinkError::Malformed("no answer before the ACK"))
}

// ---- Encoding ----

/// One request: nlmsghdr, the family header (`rtmsg`, ...), then attributes, 4-byte aligned.
fn encode(ty: u16, flags: u16, seq: u32, header: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
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

/// `struct rtmsg` asking about one IPv4 host.
fn rtmsg() -> [u8; 12] {
    let mut m = [0; 12];
    m[0] = AF_INET; // rtm_family
    m[1] = 32; // rtm_dst_len
    m
}

/// `struct ndmsg` for an IPv4 entry.
fn ndmsg(ifindex: u32, state: u16, flags: u8) -> [u8; 12] {
    let mut m = [0; 12];
    m[0] = AF_INET; // ndm_family
    m[4..8].copy_from_slice(&ifindex.to_ne_bytes()); // ndm_ifindex
    m[8..10].copy_from_slice(&state.to_ne_bytes()); // ndm_state
    m[10] = flags; // ndm_flags
    m
}

/// `struct ifinfomsg` naming one interface.
fn ifinfomsg(index: u32) -> [u8; 16] {
    let mut m = [0; 16];
    m[4..8].copy_from_slice(&index.to_ne_bytes()); // ifi_index
    m
}

// ---- Decoding: never panics, whatever the bytes ----

fn align(len: usize) -> usize {
    len.saturating_add(3) & !3
}

fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    array(b, at).map(u16::from_ne_bytes)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    array(b, at).map(u32::from_ne_bytes)
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    array(b, at).map(i32::from_ne_bytes)
}

fn u32_attr(data: &[u8]) -> Result<u32, NetlinkError> {
    u32_at(data, 0).ok_or(NetlinkError::Malformed("u32 attribute too short"))
}

fn ipv4_attr(data: &[u8]) -> Result<Ipv4Addr, NetlinkError> {
    let octets: [u8; 4] = data
        .try_into()
        .map_err(|_| NetlinkError::Malformed("IPv4 attribute not 4 bytes"))?;
    Ok(Ipv4Addr::from(octets))
}

/// The parts of an nlmsghdr we act on.
#[derive(Clone, Copy, Debug)]
struct Header {
    ty: u16,
    seq: u32,
}

/// Splits a TLV whose header is `hdr` bytes and total length `len` off the front of `b`:
/// its body, and what follows its padding.
fn split<'a>(b: &'a [u8], hdr: usize, len: usize, what: &'static str) -> Split<'a, &'a [u8]> {
    let body = if len < hdr { None } else { b.get(hdr..len) };
    let body = body.ok_or(NetlinkError::Malformed(what))?;
    Ok((body, b.get(align(len)..).unwrap_or_default()))
}

type Split<'a, T> = Result<(T, &'a [u8]), NetlinkError>;

fn message(b: &[u8]) -> Split<'_, (Header, &[u8])> {
    let (Some(len), Some(ty), Some(seq)) = (u32_at(b, 0), u16_at(b, 4), u32_at(b, 8)) else {
        return Err(NetlinkError::Malformed("truncated nlmsghdr"));
    };
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let (payload, rest) = split(b, NLMSG_HDRLEN, len, "bad nlmsg_len")?;
    Ok(((Header { ty, seq }, payload), rest))
}

fn attr(b: &[u8]) -> Split<'_, (u16, &[u8])> {
    let (Some(len), Some(ty)) = (u16_at(b, 0), u16_at(b, 2)) else {
        return Err(NetlinkError::Malformed("truncated rtattr"));
    };
    let (data, rest) = split(b, RTA_HDRLEN, usize::from(len), "bad rta_len")?;
    Ok(((ty & NLA_TYPE_MASK, data), rest))
}

/// Splits `b` into consecutive TLVs (messages or attributes) with `one`.
fn tlvs<'a, T>(mut b: &'a [u8], one: fn(&'a [u8]) -> Split<'a, T>) -> Result<Vec<T>, NetlinkError> {
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
enum Reply {
    Data,
    Skip,
    End,
}

fn reply(request: &'static str, ty: u16, payload: &[u8]) -> Result<Reply, NetlinkError> {
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

fn parse_route(payload: &[u8]) -> Result<Route, NetlinkError> {
    let (rtm, rest) = family_header::<12>(payload)?;
    let kind = match rtm[7] {
        RTN_UNICAST => RouteKind::Unicast,
        RTN_LOCAL => RouteKind::Local,
        other => RouteKind::Other(other),
    };
    let mut route = Route {
        oif: 0,
        gateway: None,
        kind,
        prefsrc: None,
    };
    for (ty, data) in tlvs(rest, attr)? {
        match ty {
            RTA_OIF => route.oif = u32_attr(data)?,
            RTA_GATEWAY => route.gateway = Some(ipv4_attr(data)?),
            RTA_PREFSRC => route.prefsrc = Some(ipv4_attr(data)?),
            _ => {}
        }
    }
    Ok(route)
}

fn parse_link(payload: &[u8]) -> Result<Link, NetlinkError> {
    let (ifi, rest) = family_header::<16>(payload)?;
    let index = u32::from_ne_bytes([ifi[4], ifi[5], ifi[6], ifi[7]]);
    let (mut name, mut mac) = (None, None);
    for (ty, data) in tlvs(rest, attr)? {
        match ty {
            IFLA_IFNAME => {
                let bytes = data.split(|&b| b == 0).next().unwrap_or_default();
                name = Some(String::from_utf8_lossy(bytes).into_owned());
            }
            IFLA_ADDRESS => mac = data.try_into().ok(),
            _ => {}
        }
    }
    let name = name.ok_or(NetlinkError::Malformed("link without IFLA_IFNAME"))?;
    Ok(Link { index, name, mac })
}

/// An IPv4 neighbour entry, or `None` for other families.
fn parse_neighbour(payload: &[u8]) -> Result<Option<Neighbour>, NetlinkError> {
    let (ndm, rest) = family_header::<12>(payload)?;
    if ndm[0] != AF_INET {
        return Ok(None);
    }
    let ifindex = u32::from_ne_bytes([ndm[4], ndm[5], ndm[6], ndm[7]]);
    let state = u16::from_ne_bytes([ndm[8], ndm[9]]);
    let (mut addr, mut mac) = (None, None);
    for (ty, data) in tlvs(rest, attr)? {
        match ty {
            NDA_DST => addr = Some(ipv4_attr(data)?),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    /// RTM_NEWNEIGH for 10.0.0.2 on ifindex 3, REACHABLE, 02:00:00:00:00:01, as a dump sends it.
    fn neighbour_datagram() -> Vec<u8> {
        let parts: [&[u8]; 17] = [
            &56u32.to_ne_bytes(), // nlmsghdr: length, type, NLM_F_MULTI, seq 7, port
            &RTM_NEWNEIGH.to_ne_bytes(),
            &2u16.to_ne_bytes(),
            &7u32.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            &[AF_INET, 0, 0, 0], // ndmsg: family, padding, ifindex, state, flags, type
            &3u32.to_ne_bytes(),
            &NUD_REACHABLE.to_ne_bytes(),
            &[0, 1],
            &8u16.to_ne_bytes(), // NDA_DST
            &NDA_DST.to_ne_bytes(),
            &[10, 0, 0, 2],
            &10u16.to_ne_bytes(), // NDA_LLADDR, then 2 bytes of padding
            &NDA_LLADDR.to_ne_bytes(),
            &[2, 0, 0, 0, 0, 1, 0, 0],
            &[8, 0, 4, 0], // NDA_PROBES, ignored (so its byte order does not matter)
            &0u32.to_ne_bytes(),
        ];
        parts.concat()
    }

    fn malformed<T: std::fmt::Debug>(result: Result<T, NetlinkError>) -> bool {
        matches!(result, Err(NetlinkError::Malformed(_)))
    }

    #[test]
    fn parses_a_hand_built_neighbour_message() {
        let datagram = neighbour_datagram();
        let msgs = tlvs(&datagram, message).expect("parse");
        let [(header, payload)] = msgs[..] else {
            panic!("one message expected: {msgs:?}")
        };
        assert_eq!((header.ty, header.seq), (RTM_NEWNEIGH, 7));
        let n = parse_neighbour(payload).expect("parse").expect("IPv4");
        let addr = Ipv4Addr::new(10, 0, 0, 2);
        assert_eq!(
            (n.ifindex, n.addr, n.mac, n.state),
            (3, addr, Some([2, 0, 0, 0, 0, 1]), 2)
        );
        assert!(n.usable());
    }

    #[test]
    fn truncated_input_is_malformed_not_a_panic() {
        let datagram = neighbour_datagram();
        for cut in 1..datagram.len() {
            assert!(malformed(tlvs(&datagram[..cut], message)), "cut at {cut}");
        }
        let payload = &datagram[NLMSG_HDRLEN..];
        for cut in 0..payload.len() {
            let result = parse_neighbour(&payload[..cut]);
            assert!(result.is_ok() || malformed(result), "cut at {cut}");
        }
        assert!(malformed(parse_neighbour(&payload[..22])));
        // Lengths below the header size would never advance: refused, not looped on.
        assert!(malformed(tlvs(&[0, 0, 1, 0], attr)));
        assert!(malformed(tlvs(&[0; 16], message)));
    }

    #[test]
    fn attributes_are_four_byte_aligned() {
        let attrs: [(u16, &[u8]); 2] = [(NDA_DST, &[0xaa]), (NDA_LLADDR, &[1, 2, 3, 4, 5, 6])];
        let msg = encode(RTM_NEWNEIGH, NLM_F_REQUEST, 9, &ndmsg(3, 0, 0), &attrs);
        assert_eq!(msg.len(), 16 + 12 + 8 + 12);
        assert_eq!((u32_at(&msg, 0), u32_at(&msg, 8)), (Some(48), Some(9)));
        assert_eq!(msg[28..36], [5, 0, 1, 0, 0xaa, 0, 0, 0]); // rta_len 5, padded to 8
        assert_eq!(u16_at(&msg, 36), Some(10));
        assert_eq!(msg[46..48], [0, 0]);
        assert_eq!(tlvs(&msg[28..], attr).expect("parse"), attrs);
    }

    #[test]
    fn replies_end_skip_or_fail() {
        let errno = |e: i32| e.to_ne_bytes();
        assert_eq!(reply("t", NLMSG_ERROR, &errno(0)).ok(), Some(Reply::End));
        let refused = reply("t", NLMSG_ERROR, &errno(-libc::ENOENT)).expect_err("refused");
        assert_eq!(refused.errno(), Some(libc::ENOENT));
        assert_eq!(reply("t", NLMSG_DONE, &errno(0)).ok(), Some(Reply::End));
        let busy = reply("t", NLMSG_DONE, &errno(-libc::EBUSY)).expect_err("busy");
        assert_eq!(busy.errno(), Some(libc::EBUSY));
        assert_eq!(reply("t", 1, &[]).ok(), Some(Reply::Skip));
        assert_eq!(reply("t", RTM_NEWNEIGH, &[]).ok(), Some(Reply::Data));
        assert!(malformed(reply("t", NLMSG_ERROR, &[0])));
    }

    #[test]
    fn usable_needs_a_resolved_state_and_a_mac() {
        let addr = Ipv4Addr::LOCALHOST;
        let n = |state, mac| {
            Neighbour {
                ifindex: 1,
                addr,
                mac,
                state,
            }
            .usable()
        };
        let mac = Some([2, 0, 0, 0, 0, 1]);
        for state in [
            NUD_REACHABLE,
            NUD_STALE,
            NUD_DELAY,
            NUD_PROBE,
            NUD_PERMANENT,
            NUD_NOARP,
        ] {
            assert!(n(state, mac), "state {state:#x}");
        }
        for state in [NUD_NONE, 0x01, 0x20] {
            assert!(!n(state, mac), "state {state:#x}"); // NONE, INCOMPLETE, FAILED
        }
        assert!(!n(NUD_REACHABLE, Some([0; 6])) && !n(NUD_REACHABLE, None));
    }

    /// Runs `ip ARGS` (in the calling thread's netns) and returns its stdout; panics with stderr.
    fn ip(args: &str) -> String {
        let out = Command::new("ip")
            .args(args.split_whitespace())
            .output()
            .expect("run ip");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ip {args}: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A named netns deleted on drop, even when the test panics.
    struct NetnsGuard(String);
    impl Drop for NetnsGuard {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    /// Runs `test` in a thread with a fresh netns holding veth `a` (10.99.0.1/24,
    /// 02:00:00:00:00:0a) whose peer `b` (10.99.0.2/24) lives in the named netns given to `test`.
    fn in_lab(test: impl FnOnce(&str) + Send + 'static) {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let ns = format!("fulcrum-nltest-{}-{n}", std::process::id());
        let thread = std::thread::spawn(move || {
            // SAFETY: unsharing the network namespace affects only this thread.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", io::Error::last_os_error());
            let _guard = NetnsGuard(ns.clone());
            ip("link set dev lo up");
            ip("link add name a address 02:00:00:00:00:0a type veth peer name b");
            ip(&format!("netns add {ns}"));
            ip(&format!("link set dev b netns {ns}"));
            ip(&format!("-n {ns} addr add 10.99.0.2/24 dev b"));
            ip(&format!("-n {ns} link set dev b up"));
            ip("addr add 10.99.0.1/24 dev a");
            ip("link set dev a up");
            test(&ns);
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }

    #[test]
    fn lab_route_link_and_neighbour_resolution() {
        in_lab(|ns| {
            let (a, b) = (Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2));
            let mut nl = Netlink::open().expect("open");
            // SAFETY: a NUL-terminated name.
            let a_index = unsafe { libc::if_nametoindex(c"a".as_ptr()) };
            let route = nl.route_get(b).expect("route to b");
            let want = (a_index, None, RouteKind::Unicast, Some(a));
            assert_eq!((route.oif, route.gateway, route.kind, route.prefsrc), want);
            assert_eq!(nl.route_get(a).expect("route to a").kind, RouteKind::Local);
            let nowhere = Ipv4Addr::new(192, 0, 2, 1);
            assert!(matches!(nl.route_get(nowhere), Err(NetlinkError::NoRoute(d)) if d == nowhere));
            let link = nl.link(route.oif).expect("link a");
            let a_mac = Some([2, 0, 0, 0, 0, 0x0a]);
            assert_eq!(
                (link.index, link.name.as_str(), link.mac),
                (a_index, "a", a_mac)
            );

            let b_mac = ip(&format!("netns exec {ns} cat /sys/class/net/b/address"));
            let b_mac = b_mac
                .trim()
                .split(':')
                .map(|x| u8::from_str_radix(x, 16).expect("hex"));
            let b_mac: Vec<u8> = b_mac.collect();
            nl.request_resolution(route.oif, b)
                .expect("request resolution");
            let find = |nl: &mut Netlink, addr| {
                let all = nl.neighbours().expect("dump");
                all.into_iter()
                    .find(|n| n.ifindex == a_index && n.addr == addr)
            };
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                match find(&mut nl, b) {
                    Some(n) if n.usable() => break assert_eq!(n.mac.map(Vec::from), Some(b_mac)),
                    n if Instant::now() > deadline => panic!("not resolved after 3 s: {n:?}"),
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            nl.request_resolution(route.oif, b)
                .expect("again, on a usable entry");
            nl.forget(route.oif, b).expect("forget");
            assert_eq!(find(&mut nl, b), None);
            nl.forget(route.oif, b).expect("forget what is gone");

            // A static entry is neither overwritten nor deleted.
            let c = Ipv4Addr::new(10, 99, 0, 3);
            ip("neigh add 10.99.0.3 lladdr 02:00:00:00:00:0c nud permanent dev a");
            nl.request_resolution(a_index, c)
                .expect("request on a static entry");
            nl.forget(a_index, c).expect("forget a static entry");
            let kept = find(&mut nl, c).map(|n| (n.mac, n.state));
            assert_eq!(kept, Some((Some([2, 0, 0, 0, 0, 0x0c]), NUD_PERMANENT)));
        });
    }
}
