//! Route, link and neighbour lookups over rtnetlink, IPv4 and IPv6.
//!
//! To forward to a backend the data plane needs the egress interface and the next hop's MAC
//! (the backend's on its segment, or the gateway's for a routed, tunnelled backend), and for
//! VLAN sub-interfaces their parent and VLAN id. The kernel already keeps all of it current
//! (route, link and neighbour tables), so we ask it rather than run our own ARP and ND.
//! Requests are synchronous, one at a time, on one socket.
//!
//! # Why hand-written bytes, not `netlink-packet-route`
//!
//! Measured 2026-12-02 on the first dual-stack version of this module against the same API
//! written on `netlink-packet-route` 0.34.0 + `netlink-sys` 0.9.0 (both build with Rust
//! 1.95, the workspace's MSRV; the route crate declares 1.77):
//! - our code: 425 lines instead of 697 (347 instead of 524 without blanks and comments;
//!   the public types are the same 128 lines in both): the crate saves the framing, the
//!   attribute walker and the constants;
//! - five more crates (the three netlink ones, `zerocopy`, `zerocopy-derive`), 15 s more of
//!   compiling in a clean release build here (11 s of it `netlink-packet-route`), +941 KiB in a
//!   stripped binary (the crate decodes every link kind, tc, MPLS, seg6...), against +30 KiB
//!   for this module;
//! - the crate decodes every attribute of every message, and one attribute it cannot decode
//!   fails the whole message: until 0.34.0 (2026-11) every RTM_NEWLINK from a kernel older
//!   than 6.9 failed on IFLA_STATS64's size, and VXLAN links on 6.5 and empty IFLA_VFINFO_LIST
//!   did the same before. Our neighbour refresh runs every second on production kernels of
//!   any age; we read 5 route, 7 link and 2 neighbour attributes and skip the rest unread,
//!   so an attribute we do not use cannot stop it. 0.34.0 also broke its API seven times.
//!
//! So the bytes stay here ([`wire`]): pure functions, tested on recorded kernel answers, a
//! hand-built VLAN link and arbitrary bytes (never a panic). Reconsider if we ever need
//! many more message kinds (addresses, rules, tc).

#[cfg(test)]
pub(crate) mod live;
#[cfg(test)]
mod recorded;
mod wire;

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use libc::RTM_NEWROUTE;
use libc::{NDA_DST, NTF_USE};
use libc::{NUD_DELAY, NUD_NOARP, NUD_NONE, NUD_PERMANENT, NUD_PROBE, NUD_REACHABLE, NUD_STALE};
use libc::{RTM_DELNEIGH, RTM_GETLINK, RTM_GETNEIGH, RTM_GETROUTE, RTM_NEWLINK, RTM_NEWNEIGH};

use wire::{NDA_FLAGS_EXT, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST, NTF_EXT_MANAGED};

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
    pub ifindex: u32,
    /// Next hop when it is not the destination itself: the neighbour whose MAC frames carry.
    /// May be of the other family (an IPv4 route via an IPv6 router, RTA_VIA).
    pub gateway: Option<IpAddr>,
    /// The source address the kernel would pick, usable as the encapsulation source.
    pub prefsrc: Option<IpAddr>,
    /// Local destinations must not be forwarded to.
    pub kind: RouteKind,
    /// The route's MTU when one is set or learnt (RTAX_MTU: `ip route ... mtu N`, or a path
    /// MTU the kernel cached), in both families alike. The kernel does not clamp it: it may
    /// exceed the link's MTU.
    pub mtu: Option<u32>,
}

impl Route {
    /// The neighbour to resolve for `dst`: the gateway, or `dst` itself when on-link.
    pub fn next_hop(&self, dst: IpAddr) -> IpAddr {
        self.gateway.unwrap_or(dst)
    }
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

/// One interface: its name for logs, its MAC (the source of frames sent out of it), its
/// MTU (what tunnelled packets must fit in), and the VLAN it carries if it is a sub-interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address, when it is a 6-byte (Ethernet) one.
    pub mac: Option<[u8; 6]>,
    /// IFLA_MTU; 0 if the kernel sent none.
    pub mtu: u32,
    /// The link's IPv6 MTU (`net.ipv6.conf.IFACE.mtu`, lowered by a router advertisement's
    /// MTU option): the kernel sends IPv6 by it, not by `mtu`, and `ip -6 route get` does
    /// not show it. `None` when the link has no IPv6.
    pub mtu6: Option<u32>,
    /// Set for an 802.1Q sub-interface (`ip link add link PARENT name X type vlan id N`):
    /// the data plane runs on the parent and tags frames with the id.
    pub vlan: Option<VlanLink>,
}

/// What makes a link a VLAN sub-interface: IFLA_LINK and IFLA_VLAN_ID of an IFLA_LINKINFO of
/// kind "vlan". 802.1ad (QinQ) sub-interfaces, and parents in another namespace, are not one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanLink {
    /// The parent (trunk) interface's index.
    pub parent: u32,
    /// The VLAN id, 1..=4094.
    pub id: u16,
}

/// One neighbour entry (ARP for IPv4, ND for IPv6): the MAC to put in frames sent to `addr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// Interface the entry belongs to.
    pub ifindex: u32,
    /// The neighbour's address.
    pub addr: IpAddr,
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
    /// The kernel has no usable route to this destination: none (ENETUNREACH), or an
    /// unreachable (EHOSTUNREACH), prohibit (EACCES), blackhole (EINVAL) or throw (EAGAIN)
    /// route, the errors `ip route get` shows for each.
    #[error("no route to {0}")]
    NoRoute(IpAddr),
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

    /// Like `ip route get DST`: RTM_GETROUTE with RTA_DST, dst_len 32 or 128.
    pub fn route_get(&mut self, dst: IpAddr) -> Result<Route, NetlinkError> {
        let (_, octets) = wire::family(dst);
        let attrs = [(libc::RTA_DST, &octets[..])];
        let header = wire::rtmsg(dst);
        match self.request(RTM_GETROUTE, NLM_F_ACK, &header, &attrs, RTM_NEWROUTE) {
            Ok(answers) => wire::parse_route(first(&answers)?),
            Err(e) if e.errno().is_some_and(no_route) => Err(NetlinkError::NoRoute(dst)),
            Err(e) => Err(e),
        }
    }

    /// RTM_GETLINK for one index: name, MAC, MTU and VLAN (see [`Link`]).
    pub fn link(&mut self, ifindex: u32) -> Result<Link, NetlinkError> {
        let header = wire::ifinfomsg(ifindex);
        let answers = self.request(RTM_GETLINK, NLM_F_ACK, &header, &[], RTM_NEWLINK)?;
        wire::parse_link(first(&answers)?)
    }

    /// RTM_GETNEIGH dump of both families (AF_UNSPEC: the ARP and the ND table).
    pub fn neighbours(&mut self) -> Result<Vec<Neighbour>, NetlinkError> {
        // A dump the kernel flags NLM_F_DUMP_INTR (table changed meanwhile) may miss entries;
        // callers re-read periodically, so the next dump catches up.
        let header = wire::ndmsg(0, 0, NUD_NONE, 0);
        let answers = self.request(RTM_GETNEIGH, NLM_F_DUMP, &header, &[], RTM_NEWNEIGH)?;
        let parsed = answers.iter().map(|a| wire::parse_neighbour(a));
        parsed.filter_map(Result::transpose).collect()
    }

    /// Asks the kernel to resolve `addr` (ARP or ND) on `ifindex` and keep it resolved:
    /// RTM_NEWNEIGH with the kernel-managed flag (NDA_FLAGS_EXT = NTF_EXT_MANAGED, kernel >=
    /// 5.16; state NUD_NONE, NLM_F_CREATE) and, as a one-shot trigger that works on any kernel,
    /// NTF_USE. An entry that is already usable is left alone, so static entries are never
    /// overwritten.
    pub fn request_resolution(&mut self, ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError> {
        if self.neighbour(ifindex, addr)?.is_some_and(|n| n.usable()) {
            return Ok(());
        }
        // Kernels before 5.16 ignore NDA_FLAGS_EXT (beyond their NDA_MAX) and act on NTF_USE.
        let managed = NTF_EXT_MANAGED.to_ne_bytes();
        let (af, octets) = wire::family(addr);
        let attrs = [(NDA_DST, &octets[..]), (NDA_FLAGS_EXT, &managed[..])];
        let header = wire::ndmsg(af, ifindex, NUD_NONE, NTF_USE);
        self.request(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE, &header, &attrs, 0)?;
        Ok(())
    }

    /// Deletes an entry this process created with request_resolution (RTM_DELNEIGH), so nothing
    /// is left behind at exit. ENOENT is not an error; static (PERMANENT, NOARP) entries are
    /// never ours and are left in place.
    pub fn forget(&mut self, ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError> {
        if self.neighbour(ifindex, addr)?.is_none_or(|n| n.is_static()) {
            return Ok(());
        }
        let (af, octets) = wire::family(addr);
        let attrs = [(NDA_DST, &octets[..])];
        let header = wire::ndmsg(af, ifindex, 0, 0);
        match self.request(RTM_DELNEIGH, NLM_F_ACK, &header, &attrs, 0) {
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            result => result.map(drop),
        }
    }

    /// One neighbour entry (RTM_GETNEIGH for one address), `None` when there is none:
    /// cheaper than a dump when resolving one backend.
    pub fn neighbour(
        &mut self,
        ifindex: u32,
        addr: IpAddr,
    ) -> Result<Option<Neighbour>, NetlinkError> {
        let (af, octets) = wire::family(addr);
        let (header, attrs) = (wire::ndmsg(af, ifindex, 0, 0), [(NDA_DST, &octets[..])]);
        match self.request(RTM_GETNEIGH, NLM_F_ACK, &header, &attrs, RTM_NEWNEIGH) {
            Ok(answers) => wire::parse_neighbour(first(&answers)?),
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
        self.send(&wire::encode(ty, NLM_F_REQUEST | flags, seq, header, attrs))?;
        let mut answers = Vec::new();
        loop {
            let len = self.recv()?;
            let datagram = self.buf.get(..len).unwrap_or_default();
            if wire::collect(datagram, seq, request_name(ty), answer, &mut answers)? {
                return Ok(answers);
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

/// The errnos RTM_GETROUTE answers for a destination it has no usable route to (the
/// `error` of each route type in the kernel's fib_props and ip6 null/prohibit/blackhole
/// entries). Our request is fixed and tested, so EINVAL here means a blackhole route.
fn no_route(errno: i32) -> bool {
    use libc::{EACCES, EAGAIN, EHOSTUNREACH, EINVAL, ENETUNREACH};
    matches!(errno, ENETUNREACH | EHOSTUNREACH | EACCES | EINVAL | EAGAIN)
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
