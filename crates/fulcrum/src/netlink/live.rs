//! The socket against a real kernel, in namespaces of the test's own (root needed); the
//! namespace helpers also serve the tunnel path tests.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use libc::NUD_PERMANENT;

use super::{Neighbour, Netlink, NetlinkError, RouteKind};

/// Runs `ip ARGS` (in the calling thread's netns) and returns its stdout; panics with stderr.
pub(crate) fn ip(args: &str) -> String {
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
/// 2001:db8:99::1/64, 02:00:00:00:00:0a, MTU 1400) whose peer `b` (10.99.0.2/24,
/// 2001:db8:99::2/64) lives in the named netns given to `test`, and routes to
/// 10.200.0.0/24 and 2001:db8:200::/64 through `b`.
pub(crate) fn in_lab(test: impl FnOnce(&str) + Send + 'static) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let ns = format!("fulcrum-nltest-{}-{n}", std::process::id());
    let thread = std::thread::spawn(move || {
        // SAFETY: unsharing the network namespace affects only this thread.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", io::Error::last_os_error());
        let _guard = NetnsGuard(ns.clone());
        ip("link set dev lo up");
        ip("link add name a address 02:00:00:00:00:0a mtu 1400 type veth peer name b");
        ip(&format!("netns add {ns}"));
        ip(&format!("link set dev b netns {ns}"));
        ip(&format!("-n {ns} addr add 10.99.0.2/24 dev b"));
        // nodad: usable at once, not tentative for a second.
        ip(&format!("-n {ns} addr add 2001:db8:99::2/64 dev b nodad"));
        ip(&format!("-n {ns} link set dev b up"));
        ip("addr add 10.99.0.1/24 dev a");
        ip("addr add 2001:db8:99::1/64 dev a nodad");
        ip("link set dev a up");
        ip("route add 10.200.0.0/24 via 10.99.0.2 dev a");
        ip("-6 route add 2001:db8:200::/64 via 2001:db8:99::2 dev a");
        test(&ns);
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

pub(crate) fn a_index() -> u32 {
    // SAFETY: a NUL-terminated name.
    unsafe { libc::if_nametoindex(c"a".as_ptr()) }
}

/// Sets a sysctl in the calling thread's netns.
pub(crate) fn sysctl(key: &str, value: &str) {
    let out = Command::new("sysctl")
        .args(["-w", &format!("{key}={value}")])
        .output()
        .expect("run sysctl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sysctl {key}={value}: {stderr}");
}

fn b_mac(ns: &str) -> [u8; 6] {
    let text = ip(&format!("netns exec {ns} cat /sys/class/net/b/address"));
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).expect("hex"))
        .collect();
    bytes.try_into().expect("6 bytes")
}

fn find(nl: &mut Netlink, addr: IpAddr) -> Option<Neighbour> {
    let all = nl.neighbours().expect("dump");
    all.into_iter()
        .find(|n| n.ifindex == a_index() && n.addr == addr)
}

/// Asks for resolution of `addr` and waits (3 s at most) until the dump shows it usable.
fn resolve(nl: &mut Netlink, addr: IpAddr) -> Neighbour {
    nl.request_resolution(a_index(), addr)
        .expect("request resolution");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match find(nl, addr) {
            Some(n) if n.usable() => return n,
            n if Instant::now() > deadline => panic!("{addr} not resolved after 3 s: {n:?}"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn lab_routes_of_both_families() {
    in_lab(|_| {
        let mut nl = Netlink::open().expect("open");
        let (a4, b4): (IpAddr, IpAddr) = (
            Ipv4Addr::new(10, 99, 0, 1).into(),
            Ipv4Addr::new(10, 99, 0, 2).into(),
        );
        let a6: IpAddr = "2001:db8:99::1".parse::<Ipv6Addr>().expect("v6").into();
        let b6: IpAddr = "2001:db8:99::2".parse::<Ipv6Addr>().expect("v6").into();
        for (local, peer, routed) in [
            (a4, b4, Ipv4Addr::new(10, 200, 0, 7).into()),
            (
                a6,
                b6,
                "2001:db8:200::10".parse::<Ipv6Addr>().expect("v6").into(),
            ),
        ] {
            let on_link = nl.route_get(peer).expect("route to b");
            let want = (a_index(), None, RouteKind::Unicast, Some(local));
            assert_eq!(
                (
                    on_link.ifindex,
                    on_link.gateway,
                    on_link.kind,
                    on_link.prefsrc
                ),
                want
            );
            assert_eq!(on_link.next_hop(peer), peer);
            let via = nl.route_get(routed).expect("routed");
            let want = (a_index(), Some(peer), RouteKind::Unicast, Some(local));
            assert_eq!((via.ifindex, via.gateway, via.kind, via.prefsrc), want);
            assert_eq!(via.next_hop(routed), peer);
            assert_eq!(
                nl.route_get(local).expect("route to a").kind,
                RouteKind::Local
            );
        }
        // Routes through nexthop objects (`ip nexthop`) name their gateway like others.
        ip("nexthop add id 1 via 10.99.0.2 dev a");
        ip("nexthop add id 2 via 2001:db8:99::2 dev a");
        ip("route add 10.202.0.0/24 nhid 1");
        ip("-6 route add 2001:db8:202::/64 nhid 2");
        for (dst, gateway) in [
            ("10.202.0.7", "10.99.0.2"),
            ("2001:db8:202::7", "2001:db8:99::2"),
        ] {
            let route = nl
                .route_get(dst.parse().expect("address"))
                .expect("nhid route");
            let want = (a_index(), Some(gateway.parse().expect("address")));
            assert_eq!((route.ifindex, route.gateway), want, "{dst}");
        }
        ip("route add blackhole 10.203.0.0/24");
        ip("route add prohibit 10.204.0.0/24");
        ip("-6 route add blackhole 2001:db8:203::/64");
        ip("-6 route add prohibit 2001:db8:204::/64");
        ip("-6 route add unreachable 2001:db8:205::/64");
        for nowhere in [
            "192.0.2.1",
            "10.203.0.1",
            "10.204.0.1",
            "2001:db8:ffff::1",
            "2001:db8:203::1",
            "2001:db8:204::1",
            "2001:db8:205::1",
        ] {
            let nowhere: IpAddr = nowhere.parse().expect("address");
            let result = nl.route_get(nowhere);
            assert!(
                matches!(result, Err(NetlinkError::NoRoute(d)) if d == nowhere),
                "{result:?}"
            );
        }
        let link = nl.link(a_index()).expect("link a");
        let want = (a_index(), "a", Some([2, 0, 0, 0, 0, 0x0a]), 1400, None);
        assert_eq!(
            (
                link.index,
                link.name.as_str(),
                link.mac,
                link.mtu,
                link.vlan
            ),
            want
        );
    });
}

#[test]
fn lab_route_and_ipv6_link_mtus() {
    in_lab(|_| {
        let mut nl = Netlink::open().expect("open");
        ip("route add 10.210.0.0/24 via 10.99.0.2 dev a mtu 1300");
        ip("-6 route add 2001:db8:210::/64 via 2001:db8:99::2 dev a mtu 1300");
        // Above the link's 1400: the kernel keeps and reports it as given.
        ip("route add 10.211.0.0/24 via 10.99.0.2 dev a mtu 1500");
        ip("-6 route add 2001:db8:211::/64 via 2001:db8:99::2 dev a mtu 1500");
        for (dst, mtu) in [
            ("10.210.0.7", Some(1300)),
            ("2001:db8:210::7", Some(1300)),
            ("10.211.0.7", Some(1500)),
            ("2001:db8:211::7", Some(1500)),
            ("10.200.0.7", None),
            ("2001:db8:200::10", None),
        ] {
            let route = nl.route_get(dst.parse().expect("address")).expect("route");
            assert_eq!(route.mtu, mtu, "{dst}");
        }
        // The link's IPv6 MTU follows IFLA_MTU until set apart, and then no route shows it.
        let link = nl.link(a_index()).expect("link a");
        assert_eq!((link.mtu, link.mtu6), (1400, Some(1400)));
        sysctl("net.ipv6.conf.a.mtu", "1320");
        let link = nl.link(a_index()).expect("link a");
        assert_eq!((link.mtu, link.mtu6), (1400, Some(1320)));
        let route = nl
            .route_get("2001:db8:200::10".parse().expect("v6"))
            .expect("route");
        assert_eq!(route.mtu, None);
    });
}

#[test]
fn lab_neighbours_of_both_families() {
    in_lab(|ns| {
        let mut nl = Netlink::open().expect("open");
        let b4: IpAddr = Ipv4Addr::new(10, 99, 0, 2).into();
        let b6: IpAddr = "2001:db8:99::2".parse::<Ipv6Addr>().expect("v6").into();
        for b in [b4, b6] {
            assert_eq!(resolve(&mut nl, b).mac, Some(b_mac(ns)), "{b}");
            let one = nl.neighbour(a_index(), b).expect("lookup").expect("entry");
            assert!(one.usable(), "{one:?}");
        }
        // A link-local gateway, as IPv6 routers are usually known: the route names it, and
        // it resolves on the route's interface.
        ip(&format!("-n {ns} addr add fe80::2/64 dev b nodad"));
        ip("-6 route add 2001:db8:206::/64 via fe80::2 dev a");
        let route = nl
            .route_get("2001:db8:206::1".parse().expect("v6"))
            .expect("route");
        let gateway: IpAddr = "fe80::2".parse().expect("v6");
        assert_eq!((route.ifindex, route.gateway), (a_index(), Some(gateway)));
        assert_eq!(resolve(&mut nl, gateway).mac, Some(b_mac(ns)));
        // One dump holds both (AF_UNSPEC).
        let all = nl.neighbours().expect("dump");
        assert!(
            all.iter().any(|n| n.addr == b4) && all.iter().any(|n| n.addr == b6),
            "{all:?}"
        );
        for b in [b4, b6] {
            nl.request_resolution(a_index(), b)
                .expect("again, on a usable entry");
            nl.forget(a_index(), b).expect("forget");
            assert_eq!(find(&mut nl, b), None);
            nl.forget(a_index(), b).expect("forget what is gone");
            assert_eq!(nl.neighbour(a_index(), b).expect("lookup"), None);
        }

        // Static entries are neither overwritten nor deleted.
        ip("neigh add 10.99.0.3 lladdr 02:00:00:00:00:0c nud permanent dev a");
        ip("-6 neigh add 2001:db8:99::3 lladdr 02:00:00:00:00:0c nud permanent dev a");
        for c in [
            IpAddr::from(Ipv4Addr::new(10, 99, 0, 3)),
            "2001:db8:99::3".parse::<Ipv6Addr>().expect("v6").into(),
        ] {
            nl.request_resolution(a_index(), c)
                .expect("request on a static entry");
            nl.forget(a_index(), c).expect("forget a static entry");
            let kept = find(&mut nl, c).map(|n| (n.mac, n.state));
            assert_eq!(
                kept,
                Some((Some([2, 0, 0, 0, 0, 0x0c]), NUD_PERMANENT)),
                "{c}"
            );
        }
    });
}
