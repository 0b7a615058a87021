//! Health probes through the tunnel, driven through the library in the layer-3 lab: a
//! socket marked with a probe's mark reaches the VIP on exactly that backend, encapsulated
//! as the service's traffic is; a backend without the VIP never answers; unknown and
//! withdrawn marks are dropped and counted. Needs the `fulcrum` binary (`fulcrum decap`).

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use fulcrum::{Forwarding, Protocol, Service, ServiceId, Tunnel};
use fulcrum_common::probe::PROBE_MARK;
use fulcrum_lab::{
    l3::{L3Lab, VIP6, backend_addr6},
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
