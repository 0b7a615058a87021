//! Health probes through the tunnel, driven through the library in the layer-3 lab: a
//! socket marked with a probe's mark reaches the VIP on exactly that backend, encapsulated
//! as the service's traffic is; a backend without the VIP never answers; unknown and
//! withdrawn marks are dropped and counted; a more specific route to the VIP by an
//! interface the balancer does not run on takes no probe. Needs the `fulcrum` binary
//! (`fulcrum decap`).

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use fulcrum::{Forwarding, Protocol, Service, ServiceId, Tunnel};
use fulcrum_common::probe::PROBE_MARK;
use fulcrum_health::{CheckSpec, Probe, Via, probe_via};
use fulcrum_lab::{
    l3::{L3Lab, LB_IFACE, ROUTER, VIP, VIP6, backend_addr, backend_addr6},
    netns::NetNs,
};
use socket2::{Domain, Socket, Type};

/// One HTTP request to `vip` port 80 from the balancer's namespace on a socket marked
/// `mark`: the answering backend's name, or the error.
fn marked_get(ns: &NetNs, vip: IpAddr, mark: u32) -> Result<String, String> {
    ns.run_in(|| {
        let addr = SocketAddr::new(vip, 80);
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)
            .map_err(|e| format!("socket: {e}"))?;
        socket.set_mark(mark).map_err(|e| format!("SO_MARK: {e}"))?;
        socket
            .connect_timeout(&addr.into(), Duration::from_secs(1))
            .map_err(|e| format!("connect: {e}"))?;
        let mut stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET / HTTP/1.0\r\n\r\n")
            .map_err(|e| format!("send: {e}"))?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(|e| format!("read: {e}"))?;
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        Ok(body
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned())
    })
    .map_err(|e| format!("netns: {e}"))?
}

#[test]
fn a_marked_probe_reaches_the_vip_on_its_backend_only() {
    let mut lab = L3Lab::new("pr", 2).expect("lab");
    lab.start_decap(&[]).expect("fulcrum decap on the backends");
    let _servers = lab.http_servers().expect("HTTP servers");
    // Backend 2 serves HTTP but does not hold the VIP.
    lab.backends[1]
        .ns
        .ip(&["-6", "addr", "del", &format!("{VIP6}/128"), "dev", "lo"])
        .expect("drop the VIP");

    let mut lb = lab.balancer.start_balancer();
    let mut service = Service::new(ServiceId::new(VIP6, 80, Protocol::Tcp));
    service.forwarding = Forwarding::Gue {
        tunnel: Tunnel::default(),
        port: fulcrum::DEFAULT_GUE_PORT,
    };
    let wanted = [
        (service, IpAddr::from(backend_addr6(1))),
        (service, IpAddr::from(backend_addr6(2))),
    ];
    let mut routes = lb.set_probes(&wanted).expect("set probes");
    for _ in 0..100 {
        if routes.iter().all(|r| r.unreachable.is_none()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(30));
        lb.refresh_neighbours().expect("refresh");
        routes = lb.set_probes(&wanted).expect("set probes");
    }
    // The next hop's MAC comes with a neighbour refresh.
    for _ in 0..10 {
        lb.refresh_neighbours().expect("refresh");
        std::thread::sleep(Duration::from_millis(30));
    }
    let (one, two) = (routes[0].mark, routes[1].mark);
    assert_ne!(one, two, "one mark per backend");
    let vip = IpAddr::from(VIP6);
    let ns = &lab.balancer.ns;
    for _ in 0..3 {
        assert_eq!(marked_get(ns, vip, one).as_deref(), Ok("backend-1"));
    }
    let sent = lb.probe_stats().expect("stats").sent;
    assert!(
        sent >= 9,
        "every packet of the probes was encapsulated: {sent}"
    );
    assert!(
        marked_get(ns, vip, two).is_err(),
        "a backend without the VIP does not answer probes to it"
    );

    let before = lb.probe_stats().expect("stats");
    let unknown = PROBE_MARK | 0xfff0;
    assert!(
        marked_get(ns, vip, unknown).is_err(),
        "an unknown probe mark"
    );
    let after = lb.probe_stats().expect("stats");
    assert!(after.no_path > before.no_path, "{before:?} -> {after:?}");
    assert_eq!(after.sent, before.sent, "nothing unknown was encapsulated");

    lb.set_probes(&wanted[..1])
        .expect("withdraw backend 2's probes");
    assert_eq!(
        lb.set_probes(&wanted[..1]).expect("again")[0].mark,
        one,
        "a probe that stays keeps its mark"
    );
}

/// Packets `iface` in `ns` has sent.
fn tx_packets(ns: &NetNs, iface: &str) -> u64 {
    let out = ns
        .ip(&["-j", "-s", "link", "show", iface])
        .expect("ip -s link");
    let links: serde_json::Value = serde_json::from_str(&out).expect("ip -j");
    links[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .expect("tx packets")
}

/// A route to the VIP that is more specific than the lab's, by an interface the balancer
/// does not run on: a probe that followed it would leave untunnelled (and, on a real
/// network, could be answered by whatever holds the VIP there). Bound to the attached
/// interface, the checker's probes take the lab's route and its tunnel instead.
#[test]
fn probes_never_leave_by_an_interface_the_balancer_does_not_run_on() {
    let mut lab = L3Lab::new("pd", 1).expect("lab");
    lab.start_decap(&[]).expect("fulcrum decap on the backends");
    let _servers = lab.http_servers().expect("HTTP servers");
    let ns = &lab.balancer.ns;
    // The lab routes the VIP itself through the router; a covering /24 does here.
    let (vip32, router) = (format!("{VIP}/32"), ROUTER.to_string());
    let commands: [&[&str]; 7] = [
        &["route", "del", &vip32],
        &[
            "route",
            "add",
            "10.78.99.0/24",
            "via",
            &router,
            "dev",
            LB_IFACE,
        ],
        &[
            "link", "add", "side0", "type", "veth", "peer", "name", "side1",
        ],
        &["link", "set", "side0", "up"],
        &["link", "set", "side1", "up"],
        &["addr", "add", "10.79.0.1/24", "dev", "side0"],
        &["route", "add", &vip32, "via", "10.79.0.2", "dev", "side0"],
    ];
    for args in commands {
        ns.ip(args).expect("the side interface");
    }
    for side in ["side0", "side1"] {
        ns.sysctl(&format!("net.ipv6.conf.{side}.disable_ipv6"), "1")
            .expect("no IPv6 chatter on the side link");
    }

    let mut lb = lab.balancer.start_balancer();
    let mut service = Service::new(ServiceId::new(VIP, 80, Protocol::Tcp));
    service.forwarding = Forwarding::Ipip(Tunnel::default());
    let wanted = [(service, IpAddr::from(backend_addr(1)))];
    let mut routes = lb.set_probes(&wanted).expect("set probes");
    for _ in 0..20 {
        lb.refresh_neighbours().expect("refresh");
        std::thread::sleep(Duration::from_millis(30));
        routes = lb.set_probes(&wanted).expect("set probes");
    }
    let route = &routes[0];
    assert_eq!(route.device.as_deref(), Some(LB_IFACE), "{route:?}");
    assert!(
        route
            .unreachable
            .as_deref()
            .is_some_and(|why| why.contains("leaves by side0")),
        "the operator is told: {route:?}"
    );

    let via = Via {
        vip: VIP.into(),
        mark: route.mark,
        device: route.device.clone(),
    };
    let spec = CheckSpec {
        probe: Probe::Tcp,
        port: 80,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        rise: 1,
        fall: 1,
    };
    let side_before = tx_packets(ns, "side0");
    let sent_before = lb.probe_stats().expect("stats").sent;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = ns
        .run_in(|| runtime.block_on(probe_via(&via, &spec)))
        .expect("netns");
    assert!(result.is_ok(), "backend 1 serves the VIP: {result:?}");
    assert!(
        lb.probe_stats().expect("stats").sent > sent_before,
        "the probe went through the tunnel"
    );
    assert_eq!(
        tx_packets(ns, "side0"),
        side_before,
        "nothing left by the side interface"
    );
}
