//! The layer-3 DSR lab: real HTTP servers on backends behind a router, reached through
//! IP-in-IP and GUE tunnels that `fulcrum decap` strips on each backend, and path MTU
//! discovery through DSR. Needs the `fulcrum` binary (`cargo build --release`).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use fulcrum::{Balancer, Counter, Destination, Forwarding, Protocol, Service, ServiceId, Tunnel};
use fulcrum_lab::{
    l3::{CLIENT, L3Lab, VIP, VIP6, backend_addr, backend_addr6, download, download_server},
    traffic::http_get,
};

const HTTP: u16 = 80;

/// The balancer in the lab's balancer namespace, serving `id` as `forwarding` on
/// `backends`, every destination resolved.
fn start_balancer(
    lab: &L3Lab,
    id: ServiceId,
    forwarding: Forwarding,
    backends: &[IpAddr],
) -> Balancer {
    let mut lb = lab.balancer.start_balancer();
    let mut service = Service::new(id);
    service.forwarding = forwarding;
    lb.add_service(service).expect("add service");
    let dests: Vec<_> = backends.iter().map(|a| Destination::new(*a)).collect();
    lb.set_destinations(&id, &dests).expect("set destinations");
    for _ in 0..150 {
        lb.refresh_neighbours().expect("refresh neighbours");
        let services = lb.services().expect("services");
        if services
            .iter()
            .flat_map(|s| &s.destinations)
            .all(|d| d.next_hop.is_some())
        {
            return lb;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("next hops not resolved within 3 s: {:?}", lb.services());
}

/// 30 connections from the client to `vip`: every backend answers some, each seeing the
/// client's own address; returns the balancer's counters that moved.
fn balanced(lab: &L3Lab, lb: &Balancer, vip: IpAddr) -> fulcrum::GlobalStats {
    let before = lb.stats().expect("stats");
    let mut share = BTreeMap::new();
    for i in 0..30 {
        let answer = http_get(&lab.client.ns, SocketAddr::new(vip, HTTP))
            .unwrap_or_else(|e| panic!("request {i} to {vip} failed: {e:#}"));
        let client = if vip.is_ipv4() {
            CLIENT.to_string()
        } else {
            fulcrum_lab::l3::CLIENT6.to_string()
        };
        // Servers listen on [::]: IPv4 peers show as mapped addresses.
        let peer = answer
            .peer
            .parse::<IpAddr>()
            .map(|a| a.to_canonical().to_string())
            .unwrap_or(answer.peer);
        assert_eq!(peer, client, "the backend sees the client's own address");
        *share.entry(answer.server).or_insert(0) += 1;
    }
    assert_eq!(
        share.len(),
        lab.backends.len(),
        "every backend gets a share: {share:?}"
    );
    let delta = lb.stats().expect("stats").since(&before);
    assert_eq!(delta.get(Counter::Drop), 0, "nothing dropped: {delta:?}");
    delta
}

fn v4_backends(n: u8) -> Vec<IpAddr> {
    (1..=n).map(|i| IpAddr::V4(backend_addr(i))).collect()
}

fn v6_backends(n: u8) -> Vec<IpAddr> {
    (1..=n).map(|i| IpAddr::V6(backend_addr6(i))).collect()
}

#[test]
fn ipip_reaches_backends_behind_a_router() {
    let mut lab = L3Lab::new("ipip", 3).expect("build the lab");
    lab.start_decap(&[]).expect("fulcrum decap on the backends");
    let _servers = lab.http_servers().expect("HTTP servers");
    let id = ServiceId::new(VIP, HTTP, Protocol::Tcp);
    let lb = start_balancer(
        &lab,
        id,
        Forwarding::Ipip(Tunnel::default()),
        &v4_backends(3),
    );
    let delta = balanced(&lab, &lb, IpAddr::V4(VIP));
    assert!(
        delta.get(Counter::Tx) >= 90,
        "requests went out tunnelled: {delta:?}"
    );
}

#[test]
fn gue_reaches_backends_behind_a_router() {
    let mut lab = L3Lab::new("gue", 3).expect("build the lab");
    lab.start_decap(&["--gue-port", "7070"])
        .expect("fulcrum decap on the backends");
    let _servers = lab.http_servers().expect("HTTP servers");
    let id = ServiceId::new(VIP, HTTP, Protocol::Tcp);
    let forwarding = Forwarding::Gue {
        tunnel: Tunnel::default(),
        port: 7070,
    };
    let lb = start_balancer(&lab, id, forwarding, &v4_backends(3));
    balanced(&lab, &lb, IpAddr::V4(VIP));
}

#[test]
fn ipv4_vip_on_ipv6_tunnelled_backends() {
    let mut lab = L3Lab::new("v4in6", 2).expect("build the lab");
    lab.start_decap(&[]).expect("fulcrum decap on the backends");
    let _servers = lab.http_servers().expect("HTTP servers");
    let id = ServiceId::new(VIP, HTTP, Protocol::Tcp);
    let lb = start_balancer(
        &lab,
        id,
        Forwarding::Ipip(Tunnel::default()),
        &v6_backends(2),
    );
    balanced(&lab, &lb, IpAddr::V4(VIP));
}

#[test]
fn large_download_completes_only_because_frag_needed_reaches_the_backend() {
    let mut lab = L3Lab::new("pmtu", 1).expect("build the lab");
    lab.start_decap(&[]).expect("fulcrum decap on the backend");
    let _server = download_server(
        &lab.backends[0].ns,
        SocketAddr::from(([0, 0, 0, 0], HTTP)),
        1 << 20,
    )
    .expect("download server");
    let id = ServiceId::new(VIP, HTTP, Protocol::Tcp);
    let lb = start_balancer(
        &lab,
        id,
        Forwarding::Ipip(Tunnel::default()),
        &v4_backends(1),
    );
    lab.narrow_client_path(1200).expect("a 1200-byte hop");
    let vip = SocketAddr::new(IpAddr::V4(VIP), HTTP);

    // Without a way for the router's ICMP to reach the balancer, the download stalls:
    // the backend never learns the smaller MTU.
    let vip_route = format!("{VIP}/32");
    lab.router
        .ns
        .ip(&["route", "del", &vip_route])
        .expect("cut the VIP route");
    let stalled = download(&lab.client.ns, vip, Duration::from_secs(3));
    assert!(
        stalled.is_err(),
        "a download through the black hole: {stalled:?}"
    );

    lab.router
        .ns
        .ip(&[
            "route",
            "add",
            &vip_route,
            "via",
            &fulcrum_lab::l3::BALANCER.to_string(),
        ])
        .expect("route the VIP to the balancer again");
    let before = lb.stats().expect("stats");
    let got =
        download(&lab.client.ns, vip, Duration::from_secs(5)).expect("the download completes");
    assert_eq!(got, 1 << 20, "every byte arrived");
    let delta = lb.stats().expect("stats").since(&before);
    assert!(
        delta.get(Counter::IcmpErrorForwarded) >= 1,
        "the router's frag-needed went to the backend: {delta:?}"
    );
    let cached = lab.backends[0]
        .ns
        .ip(&[
            "route",
            "get",
            &CLIENT.to_string(),
            "from",
            &VIP.to_string(),
        ])
        .expect("route get");
    assert!(
        cached.contains("mtu 1200"),
        "the backend learnt the path MTU: {cached}"
    );
}

#[test]
fn ipv6_vip_in_ipv6_tunnels() {
    let mut lab = L3Lab::new("v6in6", 2).expect("build the lab");
    lab.start_decap(&[]).expect("fulcrum decap on the backends");
    let _servers = lab.http_servers().expect("HTTP servers");
    let id = ServiceId::new(VIP6, HTTP, Protocol::Tcp);
    let lb = start_balancer(
        &lab,
        id,
        Forwarding::Ipip(Tunnel::default()),
        &v6_backends(2),
    );
    balanced(&lab, &lb, IpAddr::V6(VIP6));
}

#[test]
fn the_balancer_answers_ping_to_its_vips() {
    let lab = L3Lab::new("ping", 1).expect("build the lab");
    let mut lb = start_balancer(
        &lab,
        ServiceId::new(VIP, HTTP, Protocol::Tcp),
        Forwarding::Ipip(Tunnel::default()),
        &v4_backends(1),
    );
    let mut v6 = Service::new(ServiceId::new(VIP6, HTTP, Protocol::Tcp));
    v6.forwarding = Forwarding::Ipip(Tunnel::default());
    lb.add_service(v6).expect("IPv6 service");
    let before = lb.stats().expect("stats");
    for vip in [VIP.to_string(), VIP6.to_string()] {
        lab.client
            .ns
            .exec("ping", &["-c", "2", "-W", "2", &vip])
            .unwrap_or_else(|e| panic!("ping {vip}: {e:#}"));
    }
    let delta = lb.stats().expect("stats").since(&before);
    assert_eq!(delta.get(Counter::IcmpEchoReply), 4, "{delta:?}");
}

#[test]
fn a_routed_backend_is_a_destination_only_of_a_tunnelled_service() {
    let lab = L3Lab::new("check", 1).expect("build the lab");
    let id = ServiceId::new(VIP, HTTP, Protocol::Tcp);
    let mut lb = start_balancer(&lab, id, Forwarding::Ipip(Tunnel::default()), &[]);
    let backend = IpAddr::V4(backend_addr(1));
    let mut tunnelled = Service::new(id);
    tunnelled.forwarding = Forwarding::Ipip(Tunnel::default());
    lb.check_destination(&tunnelled, backend)
        .expect("a routed backend of a tunnelled service");
    let on_link = Service::new(ServiceId::new(VIP, 8080, Protocol::Tcp));
    let err = lb
        .check_destination(&on_link, backend)
        .expect_err("L2 DSR needs the backend on link");
    assert!(
        matches!(err, fulcrum::BalancerError::NotDirectlyConnected { .. }),
        "{err:?}"
    );
}
