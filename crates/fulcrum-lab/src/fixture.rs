//! The packet fixtures' harness: a namespace with backends in the kernel's neighbour
//! table, a balancer attached to it, and the calling thread inside it and pinned to one
//! CPU (the flow cache is per CPU, so a thread that migrates between two calls would see
//! another CPU's state). Shared by the fixture and fuzz tests; panics with context, as
//! tests do.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use aya::maps::{Map, MapData};
use fulcrum::{
    AttachMode, Balancer, BalancerBuilder, Counter, Destination, GlobalStats, Protocol, Service,
    ServiceId,
};

use crate::{
    frame::FrameBuilder,
    netns::{NetNs, NsGuard, unique_prefix},
    testrun::{Ran, action, current_cpu, pin_to_cpu, run_frame},
};

/// The web service's VIP (port 80/tcp in [`Fixture::with_web`]).
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 88, 99, 1);
/// A VIP for every-port services.
pub const VIP_ALL_PORTS: Ipv4Addr = Ipv4Addr::new(10, 88, 99, 2);
/// A VIP for a service without backends.
pub const VIP_EMPTY: Ipv4Addr = Ipv4Addr::new(10, 88, 99, 3);
/// The fixture client's address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 88, 50, 7);
/// A backend behind `fy0`, the second interface.
pub const FAR_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 88, 1, 21);

/// The IPv6 web service's VIP (port 80/tcp in [`Fixture::with_web6`]).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x88, 0x99, 0, 0, 0, 1);
/// The fixture client's IPv6 address.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x88, 0x50, 0, 0, 0, 7);

/// Backend `n` (1..=4) on `fx0` by IPv6, with the MAC of [`backend`] `n`.
pub fn backend6(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x88, 0, 0, 0, 0, 0x10 + u16::from(n))
}

/// VIP6:80/tcp.
pub fn web6() -> ServiceId {
    ServiceId::new(VIP6, 80, Protocol::Tcp)
}

/// The IPv6 client on `port`.
pub fn client6(port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(CLIENT6, port, 0, 0)
}

/// `[vip]:port`.
pub fn to6(vip: Ipv6Addr, port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(vip, port, 0, 0)
}

/// Backend `n` (1..=4), on `fx0`.
pub fn backend(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 88, 0, 10 + n)
}

/// Backend `n`'s MAC, as its permanent neighbour entry says.
pub fn backend_mac(n: u8) -> [u8; 6] {
    [0x02, 0xbe, 0, 0, 0, n]
}

/// Which fixture backend (1 to 4) an output frame goes to, by its destination MAC.
pub fn backend_of(frame: &[u8]) -> u8 {
    (1..=4)
        .find(|n| backend_mac(*n) == frame[0..6])
        .unwrap_or_else(|| panic!("destination MAC {:02x?} is no backend's", &frame[0..6]))
}

/// VIP:80/tcp.
pub fn web() -> ServiceId {
    ServiceId::new(VIP, 80, Protocol::Tcp)
}

/// The client on `port`.
pub fn client(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(CLIENT, port)
}

/// `vip:port`.
pub fn to(vip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(vip, port)
}

/// A namespace with `fx0` (backends 1..=4 as permanent neighbours) and `fy0` (one far
/// backend), a balancer attached to both, and the calling thread inside the namespace,
/// pinned to the CPU it was on.
pub struct Fixture {
    /// The balancer under test.
    pub lb: Balancer,
    /// Ifindex of `fx0`, where fixture frames arrive.
    pub fx0: u32,
    /// `fx0`'s MAC: the source MAC of frames sent back out of it.
    pub fx0_mac: [u8; 6],
    _guard: NsGuard,
    /// The fixture's namespace.
    pub ns: NetNs,
}

impl Fixture {
    /// The namespace, the balancer, no services.
    pub fn new() -> Self {
        Self::with_builder(|b| b)
    }

    /// As [`Fixture::new`], with load-time choices of the caller's (flow sharing).
    pub fn with_builder(choose: impl FnOnce(BalancerBuilder) -> BalancerBuilder) -> Self {
        pin_to_cpu(current_cpu()).expect("pin the test thread to its CPU");
        let ns = NetNs::create(&format!("{}-fx", unique_prefix("f"))).expect("create netns");
        // The veths would send IPv6 router and multicast listener solicitations through
        // the program, and fixtures count what their own frames move.
        for conf in ["all", "default"] {
            ns.sysctl(&format!("net.ipv6.conf.{conf}.disable_ipv6"), "1")
                .expect("disable IPv6");
        }
        for (a, b, addr) in [
            ("fx0", "fx1", "10.88.0.1/24"),
            ("fy0", "fy1", "10.88.1.1/24"),
        ] {
            ns.ip(&["link", "add", a, "type", "veth", "peer", "name", b])
                .expect("veth");
            ns.ip(&["addr", "add", addr, "dev", a]).expect("address");
            ns.ip(&["link", "set", a, "up"]).expect("up");
            ns.ip(&["link", "set", b, "up"]).expect("up");
        }
        // IPv6 backends on fx0 only: what fx0 sends goes to fx1, which has no IPv6 and
        // sends nothing back through the program.
        ns.sysctl("net.ipv6.conf.fx0.disable_ipv6", "0")
            .expect("IPv6 on fx0");
        ns.ip(&["addr", "add", "2001:db8:88::1/64", "dev", "fx0", "nodad"])
            .expect("IPv6 address");
        for n in 1..=4 {
            let mac = backend_mac(n).map(|b| format!("{b:02x}")).join(":");
            for addr in [backend(n).to_string(), backend6(n).to_string()] {
                ns.ip(&[
                    "neigh",
                    "replace",
                    &addr,
                    "lladdr",
                    &mac,
                    "dev",
                    "fx0",
                    "nud",
                    "permanent",
                ])
                .expect("neighbour");
            }
        }
        ns.ip(&[
            "neigh",
            "replace",
            &FAR_BACKEND.to_string(),
            "lladdr",
            "02:be:00:00:01:21",
            "dev",
            "fy0",
            "nud",
            "permanent",
        ])
        .expect("neighbour");
        let fx0_mac = read_mac(&ns, "fx0");
        let guard = ns.enter().expect("enter netns");
        let mut lb = choose(
            Balancer::builder()
                .max_services(8)
                .max_backends(64)
                .max_flows(4096),
        )
        .build()
        .expect("load the balancer");
        lb.attach("fx0", AttachMode::Native).expect("attach fx0");
        lb.attach("fy0", AttachMode::Native).expect("attach fy0");
        let fx0 = ifindex("fx0");
        Self {
            lb,
            fx0,
            fx0_mac,
            _guard: guard,
            ns,
        }
    }

    /// A fixture with the web service (VIP:80/tcp) on backends 1..=3.
    pub fn with_web() -> Self {
        Self::web_on(Self::new(), &[1, 2, 3])
    }

    /// `f` with the web service (VIP:80/tcp) on the given backends.
    pub fn web_on(mut f: Self, backends: &[u8]) -> Self {
        f.lb.add_service(Service::new(web())).expect("add service");
        let dests: Vec<_> = backends
            .iter()
            .map(|n| Destination::new(backend(*n)))
            .collect();
        f.lb.set_destinations(&web(), &dests)
            .expect("set destinations");
        f
    }

    /// A fixture with the IPv6 web service (VIP6:80/tcp) on IPv6 backends 1..=3.
    pub fn with_web6() -> Self {
        let mut f = Self::new();
        f.lb.add_service(Service::new(web6())).expect("add service");
        let dests: Vec<_> = [1, 2, 3]
            .iter()
            .map(|n| Destination::new(backend6(*n)))
            .collect();
        f.lb.set_destinations(&web6(), &dests)
            .expect("set destinations");
        f
    }

    /// Runs one frame through the program, arriving on `fx0`.
    pub fn run(&self, frame: &[u8]) -> Ran {
        run_frame(self.lb.program().expect("program"), frame, self.fx0).expect("test run")
    }

    /// The global counters now.
    pub fn stats(&self) -> GlobalStats {
        self.lb.stats().expect("stats")
    }

    /// Runs `f` with the thread pinned to `cpu`, then pins it back to where it was: the
    /// way to show what a packet does when it lands on another CPU.
    pub fn on_cpu<T>(&self, cpu: usize, f: impl FnOnce() -> T) -> T {
        let home = current_cpu();
        pin_to_cpu(cpu).unwrap_or_else(|e| panic!("pin to CPU {cpu}: {e}"));
        let out = f();
        pin_to_cpu(home).expect("pin back");
        out
    }

    /// Runs the frame and checks it was sent back out with only the MACs rewritten, to
    /// one of the given backends; returns which.
    pub fn expect_forwarded(&self, frame: &[u8], backends: &[u8]) -> u8 {
        let out = self.run_tx(frame);
        let dst: [u8; 6] = out[0..6].try_into().expect("6 bytes");
        let n = backends
            .iter()
            .copied()
            .find(|n| backend_mac(*n) == dst)
            .unwrap_or_else(|| {
                panic!("destination MAC {dst:02x?} is none of backends {backends:?}")
            });
        let mut want = frame.to_vec();
        want[0..6].copy_from_slice(&backend_mac(n));
        want[6..12].copy_from_slice(&self.fx0_mac);
        assert_eq!(out, want, "output frame: only the MACs change");
        n
    }

    /// Runs the frame, checks it was sent back out (naming the counters that moved if
    /// not) and returns the frame sent.
    pub fn run_tx(&self, frame: &[u8]) -> Vec<u8> {
        let before = self.stats();
        let ran = self.run(frame);
        if ran.action != action::TX {
            let moved: Vec<_> = self
                .stats()
                .since(&before)
                .iter()
                .filter(|(_, v)| *v != 0)
                .collect();
            panic!(
                "action {} (want XDP_TX); counters that moved: {moved:?}",
                ran.action
            );
        }
        ran.frame
    }

    /// A client's SYN and handshake ACK to the web service; returns the backend chosen.
    pub fn handshake(&self, port: u16) -> u8 {
        let syn = FrameBuilder::tcp(client(port), to(VIP, 80)).syn().build();
        let chosen = self.expect_forwarded(&syn, &[1, 2, 3, 4]);
        let ack = FrameBuilder::tcp(client(port), to(VIP, 80)).build();
        assert_eq!(
            self.expect_forwarded(&ack, &[1, 2, 3, 4]),
            chosen,
            "the handshake ACK follows the SYN"
        );
        chosen
    }

    /// Runs the frame and checks the action, that the frame is untouched, and which
    /// counters moved.
    pub fn expect_untouched(&self, frame: &[u8], want_action: u32, counters: &[Counter]) {
        let before = self.stats();
        let ran = self.run(frame);
        assert_eq!(ran.action, want_action, "action");
        assert_eq!(ran.frame, frame, "frame must be untouched");
        assert_moved(&self.stats().since(&before), counters);
    }

    /// One of the program's maps, opened by id, for fixtures that build a state the
    /// library never writes (the middle of a race).
    pub fn map(&self, name: &str) -> Map {
        let info = self.lb.program().expect("program").info().expect("info");
        for id in info.map_ids().expect("map ids").unwrap_or_default() {
            let data = MapData::from_id(id).expect("open map by id");
            if data.info().expect("map info").name_as_str() == Some(name) {
                return Map::from_map_data(data).expect("map type");
            }
        }
        panic!("the program uses no map {name}")
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

fn read_mac(ns: &NetNs, iface: &str) -> [u8; 6] {
    let text = ns
        .exec("cat", &[&format!("/sys/class/net/{iface}/address")])
        .expect("read MAC");
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect();
    bytes.try_into().expect("6 bytes")
}

/// The ifindex of `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("name");
    // SAFETY: valid C string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(index, 0, "no interface {name}");
    index
}

/// Exactly these counters moved, each by one.
pub fn assert_moved(delta: &GlobalStats, want: &[Counter]) {
    let moved: Vec<(Counter, u64)> = delta.iter().filter(|(_, v)| *v != 0).collect();
    let expected: Vec<(Counter, u64)> = Counter::ALL
        .iter()
        .filter(|c| want.contains(c))
        .map(|c| (*c, 1))
        .collect();
    assert_eq!(moved, expected, "counters that moved");
}
