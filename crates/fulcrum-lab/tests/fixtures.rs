//! Packet fixtures: real frames through the real, verified XDP program with
//! BPF_PROG_TEST_RUN. Each asserts the action, the output frame byte for byte, and the
//! counters. Backends' MACs come from the kernel's neighbour table of a namespace the
//! fixture owns, as in production.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
};

use fulcrum::{
    AttachMode, Balancer, Counter, Destination, GlobalStats, Protocol, Scheduler, Service,
    ServiceId,
};
use fulcrum_lab::{
    frame::{self, FrameBuilder, TCP_ACK, TCP_PSH},
    netns::{NetNs, NsGuard, unique_prefix},
    testrun::{Ran, action, run_frame},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 88, 99, 1);
const VIP_ALL_PORTS: Ipv4Addr = Ipv4Addr::new(10, 88, 99, 2);
const VIP_EMPTY: Ipv4Addr = Ipv4Addr::new(10, 88, 99, 3);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 88, 50, 7);
const FAR_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 88, 1, 21);

fn backend(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 88, 0, 10 + n)
}

fn backend_mac(n: u8) -> [u8; 6] {
    [0x02, 0xbe, 0, 0, 0, n]
}

fn web() -> ServiceId {
    ServiceId::new(VIP, 80, Protocol::Tcp)
}

/// A namespace with `fx0` (backends 1..=4 as permanent neighbours) and `fy0` (one far
/// backend), a balancer attached to both, and the test thread inside the namespace.
struct Fixture {
    lb: Balancer,
    fx0: u32,
    fx0_mac: [u8; 6],
    _guard: NsGuard,
    ns: NetNs,
}

impl Fixture {
    fn new() -> Self {
        let ns = NetNs::create(&format!("{}-fx", unique_prefix("f"))).expect("create netns");
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
        for n in 1..=4 {
            let mac = backend_mac(n).map(|b| format!("{b:02x}")).join(":");
            ns.ip(&[
                "neigh",
                "replace",
                &backend(n).to_string(),
                "lladdr",
                &mac,
                "dev",
                "fx0",
                "nud",
                "permanent",
            ])
            .expect("neighbour");
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
        let mut lb = Balancer::builder()
            .max_services(8)
            .max_backends(64)
            .max_flows(4096)
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
    fn with_web() -> Self {
        let mut f = Self::new();
        f.lb.add_service(Service::new(web())).expect("add service");
        let dests: Vec<_> = (1..=3).map(|n| Destination::new(backend(n))).collect();
        f.lb.set_destinations(&web(), &dests)
            .expect("set destinations");
        f
    }

    fn run(&self, frame: &[u8]) -> Ran {
        run_frame(self.lb.program().expect("program"), frame, self.fx0).expect("test run")
    }

    fn stats(&self) -> GlobalStats {
        self.lb.stats().expect("stats")
    }

    /// Runs the frame and checks it was sent back out with only the MACs rewritten, to
    /// one of the given backends; returns which.
    fn expect_forwarded(&self, frame: &[u8], backends: &[u8]) -> u8 {
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
                "action {} for a VIP packet (want XDP_TX); counters that moved: {moved:?}",
                ran.action
            );
        }
        let dst: [u8; 6] = ran.frame[0..6].try_into().expect("6 bytes");
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
        assert_eq!(ran.frame, want, "output frame: only the MACs change");
        n
    }

    /// A client's SYN and handshake ACK to the web service; returns the backend chosen.
    fn handshake(&self, port: u16) -> u8 {
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
    fn expect_untouched(&self, frame: &[u8], want_action: u32, counters: &[Counter]) {
        let before = self.stats();
        let ran = self.run(frame);
        assert_eq!(ran.action, want_action, "action");
        assert_eq!(ran.frame, frame, "frame must be untouched");
        assert_moved(&self.stats().since(&before), counters);
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

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("name");
    // SAFETY: valid C string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(index, 0, "no interface {name}");
    index
}

/// Exactly these counters moved, each by one.
fn assert_moved(delta: &GlobalStats, want: &[Counter]) {
    let moved: Vec<(Counter, u64)> = delta.iter().filter(|(_, v)| *v != 0).collect();
    let expected: Vec<(Counter, u64)> = fulcrum::Counter::ALL
        .iter()
        .filter(|c| want.contains(c))
        .map(|c| (*c, 1))
        .collect();
    assert_eq!(moved, expected, "counters that moved");
}

fn client(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(CLIENT, port)
}

fn to(vip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(vip, port)
}

#[test]
fn tcp_syn_then_established_stay_on_one_backend() {
    let f = Fixture::with_web();
    let syn = FrameBuilder::tcp(client(40000), to(VIP, 80)).syn().build();
    let before = f.stats();
    let chosen = f.expect_forwarded(&syn, &[1, 2, 3]);
    assert_moved(
        &f.stats().since(&before),
        &[Counter::Tx, Counter::FlowNewSyn],
    );

    let data = FrameBuilder::tcp(client(40000), to(VIP, 80))
        .tcp_flags(TCP_ACK | TCP_PSH)
        .payload(b"GET / HTTP/1.1\r\n\r\n")
        .build();
    for _ in 0..5 {
        let before = f.stats();
        assert_eq!(
            f.expect_forwarded(&data, &[1, 2, 3]),
            chosen,
            "established packet follows the SYN"
        );
        assert_moved(&f.stats().since(&before), &[Counter::Tx, Counter::FlowHit]);
    }

    let info = f.lb.services().expect("services");
    let svc = &info[0];
    assert_eq!(svc.traffic.packets, 6, "service packets");
    assert_eq!(svc.traffic.new_flows, 1, "service new flows");
    assert_eq!(
        svc.traffic.bytes,
        (syn.len() + 5 * data.len()) as u64,
        "service bytes"
    );
    let per_backend: Vec<u64> = svc.destinations.iter().map(|d| d.traffic.packets).collect();
    let mut want = vec![0; 3];
    want[usize::from(chosen - 1)] = 6;
    assert_eq!(per_backend, want, "backend packet counters");
}

#[test]
fn non_syn_miss_is_counted_apart_from_syn() {
    let f = Fixture::with_web();
    let ack = FrameBuilder::tcp(client(40001), to(VIP, 80)).build();
    let before = f.stats();
    let first = f.expect_forwarded(&ack, &[1, 2, 3]);
    assert_moved(
        &f.stats().since(&before),
        &[Counter::Tx, Counter::FlowMissNonSyn],
    );
    let before = f.stats();
    assert_eq!(
        f.expect_forwarded(&ack, &[1, 2, 3]),
        first,
        "pinned after the miss"
    );
    assert_moved(&f.stats().since(&before), &[Counter::Tx, Counter::FlowHit]);
}

#[test]
fn udp_to_a_vip_is_balanced_and_pinned() {
    let mut f = Fixture::new();
    let dns = ServiceId::new(VIP, 53, Protocol::Udp);
    f.lb.add_service(Service::new(dns)).expect("add");
    f.lb.set_destinations(
        &dns,
        &[Destination::new(backend(1)), Destination::new(backend(2))],
    )
    .expect("set");
    let mut seen = BTreeSet::new();
    for port in 50000..50040 {
        let q = FrameBuilder::udp(client(port), to(VIP, 53))
            .payload(b"query")
            .build();
        let before = f.stats();
        let n = f.expect_forwarded(&q, &[1, 2]);
        assert_moved(
            &f.stats().since(&before),
            &[Counter::Tx, Counter::FlowNewUdp],
        );
        let before = f.stats();
        assert_eq!(
            f.expect_forwarded(&q, &[1, 2]),
            n,
            "second datagram of the flow"
        );
        assert_moved(&f.stats().since(&before), &[Counter::Tx, Counter::FlowHit]);
        seen.insert(n);
    }
    assert_eq!(seen.len(), 2, "40 flows reach both backends");
    // TCP to the UDP service's port is not that service.
    let tcp = FrameBuilder::tcp(client(1), to(VIP, 53)).syn().build();
    f.expect_untouched(&tcp, action::PASS, &[Counter::Pass, Counter::PassNoService]);
}

#[test]
fn port_zero_service_takes_every_port() {
    let mut f = Fixture::new();
    let all = ServiceId::new(VIP_ALL_PORTS, 0, Protocol::Tcp);
    f.lb.add_service(Service::new(all)).expect("add");
    f.lb.set_destinations(&all, &[Destination::new(backend(4))])
        .expect("set");
    for port in [1, 22, 80, 443, 8080, 65535] {
        let syn = FrameBuilder::tcp(client(40000), to(VIP_ALL_PORTS, port))
            .syn()
            .build();
        assert_eq!(f.expect_forwarded(&syn, &[4]), 4, "port {port}");
    }
    let udp = FrameBuilder::udp(client(40000), to(VIP_ALL_PORTS, 53)).build();
    f.expect_untouched(&udp, action::PASS, &[Counter::Pass, Counter::PassNoService]);
}

#[test]
fn exact_port_wins_over_port_zero() {
    let mut f = Fixture::with_web();
    let all = ServiceId::new(VIP, 0, Protocol::Tcp);
    f.lb.add_service(Service::new(all)).expect("add");
    f.lb.set_destinations(&all, &[Destination::new(backend(4))])
        .expect("set");
    let web_syn = FrameBuilder::tcp(client(40000), to(VIP, 80)).syn().build();
    f.expect_forwarded(&web_syn, &[1, 2, 3]);
    let other = FrameBuilder::tcp(client(40000), to(VIP, 81)).syn().build();
    f.expect_forwarded(&other, &[4]);
}

#[test]
fn traffic_not_for_a_vip_passes_untouched() {
    let f = Fixture::with_web();
    let host = FrameBuilder::tcp(client(40000), to(Ipv4Addr::new(10, 88, 0, 1), 22))
        .syn()
        .build();
    f.expect_untouched(&host, action::PASS, &[Counter::Pass, Counter::PassNotVip]);
    // Malformed but not for a VIP: the kernel's business, not ours.
    let host_opts = FrameBuilder::tcp(client(1), to(Ipv4Addr::new(10, 88, 0, 1), 22))
        .ip_options(&[1, 1, 1, 1])
        .build();
    f.expect_untouched(
        &host_opts,
        action::PASS,
        &[Counter::Pass, Counter::PassNotVip],
    );
    let arp = frame::arp_request(CLIENT, VIP);
    f.expect_untouched(&arp, action::PASS, &[Counter::Pass, Counter::PassNotIpv4]);
    let v6 = frame::ipv6_udp([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    f.expect_untouched(&v6, action::PASS, &[Counter::Pass, Counter::PassNotIpv4]);
    // ICMP to a VIP is the kernel's to answer.
    let mut icmp = FrameBuilder::udp(client(1), to(VIP, 80)).build();
    icmp[14 + 9] = 1;
    f.expect_untouched(
        &icmp,
        action::PASS,
        &[Counter::Pass, Counter::PassNoService],
    );
    // A VIP, but no service on this port.
    let other_port = FrameBuilder::tcp(client(1), to(VIP, 443)).syn().build();
    f.expect_untouched(
        &other_port,
        action::PASS,
        &[Counter::Pass, Counter::PassNoService],
    );
}

#[test]
fn vlan_tagged_frames_keep_their_tag() {
    let f = Fixture::with_web();
    let syn = FrameBuilder::tcp(client(40002), to(VIP, 80))
        .syn()
        .vlan(42)
        .build();
    let n = f.expect_forwarded(&syn, &[1, 2, 3]);
    let ack = FrameBuilder::tcp(client(40002), to(VIP, 80))
        .vlan(42)
        .build();
    assert_eq!(f.expect_forwarded(&ack, &[1, 2, 3]), n);
    assert_eq!(
        &syn[12..16],
        &[0x81, 0x00, 0x00, 42],
        "the fixture is tagged"
    );
}

#[test]
fn truncated_headers_follow_their_rule() {
    let f = Fixture::with_web();
    let full = FrameBuilder::tcp(client(40003), to(VIP, 80)).syn().build();
    // Shorter than Ethernet + 802.1Q: cannot be VIP traffic, passes.
    let tagged = FrameBuilder::tcp(client(40003), to(VIP, 80))
        .syn()
        .vlan(5)
        .build();
    f.expect_untouched(
        &tagged[..16],
        action::PASS,
        &[Counter::Pass, Counter::PassMalformedL2],
    );
    // IPv4 header cut before the destination: passes (unreadable, not ours).
    f.expect_untouched(
        &full[..14 + 16],
        action::PASS,
        &[Counter::Pass, Counter::PassMalformedIp],
    );
    // TCP header cut short, IP length agreeing with the frame: dropped.
    let mut short_tcp = full[..14 + 20 + 10].to_vec();
    short_tcp[16..18].copy_from_slice(&30u16.to_be_bytes());
    f.expect_untouched(
        &short_tcp,
        action::DROP,
        &[Counter::Drop, Counter::DropTruncatedL4],
    );
    // IP total length beyond the frame: dropped.
    let long = FrameBuilder::tcp(client(40003), to(VIP, 80))
        .syn()
        .total_len(1400)
        .build();
    f.expect_untouched(&long, action::DROP, &[Counter::Drop, Counter::DropIpLength]);
    // IP total length shorter than its header: dropped.
    let tiny = FrameBuilder::tcp(client(40003), to(VIP, 80))
        .syn()
        .total_len(12)
        .build();
    f.expect_untouched(
        &tiny,
        action::DROP,
        &[Counter::Drop, Counter::DropBadIpHeader],
    );
    // Ethernet padding after the IP packet is fine.
    let mut padded = full.clone();
    padded.extend_from_slice(&[0; 6]);
    f.expect_forwarded(&padded, &[1, 2, 3]);
}

#[test]
fn bad_ip_headers_options_and_fragments_to_a_vip_are_dropped() {
    let f = Fixture::with_web();
    let base = || FrameBuilder::tcp(client(40004), to(VIP, 80)).syn();
    f.expect_untouched(
        &base().version_ihl(0x65).build(),
        action::DROP,
        &[Counter::Drop, Counter::DropBadIpHeader],
    );
    f.expect_untouched(
        &base().version_ihl(0x44).build(),
        action::DROP,
        &[Counter::Drop, Counter::DropBadIpHeader],
    );
    f.expect_untouched(
        &base().ip_options(&[0x94, 4, 0, 0]).build(),
        action::DROP,
        &[Counter::Drop, Counter::DropIpOptions],
    );
    f.expect_untouched(
        &base().fragment(0x2000).build(),
        action::DROP,
        &[Counter::Drop, Counter::DropFragment],
    );
    f.expect_untouched(
        &base().fragment(0x00b9).build(),
        action::DROP,
        &[Counter::Drop, Counter::DropFragment],
    );
    // Don't-fragment alone is not a fragment.
    f.expect_forwarded(&base().fragment(0x4000).build(), &[1, 2, 3]);
}

#[test]
fn a_vip_without_usable_backends_drops() {
    let mut f = Fixture::new();
    let empty = ServiceId::new(VIP_EMPTY, 80, Protocol::Tcp);
    f.lb.add_service(Service::new(empty)).expect("add");
    let syn = FrameBuilder::tcp(client(40005), to(VIP_EMPTY, 80))
        .syn()
        .build();
    f.expect_untouched(&syn, action::DROP, &[Counter::Drop, Counter::DropNoBackend]);
    // All drained is the same as none.
    f.lb.set_destinations(&empty, &[Destination::new(backend(1))])
        .expect("set");
    f.expect_forwarded(&syn, &[1]);
    f.lb.drain(&empty, backend(1)).expect("drain");
    let other = FrameBuilder::tcp(client(40006), to(VIP_EMPTY, 80))
        .syn()
        .build();
    f.expect_untouched(
        &other,
        action::DROP,
        &[Counter::Drop, Counter::DropNoBackend],
    );
    // A removed service's VIP is ordinary traffic again.
    f.lb.remove_service(&empty).expect("remove");
    f.expect_untouched(&syn, action::PASS, &[Counter::Pass, Counter::PassNotVip]);
}

#[test]
fn flows_keep_their_backend_when_the_backend_set_changes() {
    let mut f = Fixture::with_web();
    let flows: Vec<u16> = (41000..41064).collect();
    let mut before = Vec::new();
    for &port in &flows {
        before.push(f.handshake(port));
    }
    // Add backend 4 and reweigh backend 2: many hash slots change owner.
    f.lb.add_destination(&web(), Destination::new(backend(4)))
        .expect("add");
    f.lb.update_destination(&web(), Destination::new(backend(2)).with_weight(3))
        .expect("reweigh");
    let mut moved_for_new_flows = 0;
    for (&port, &was) in flows.iter().zip(&before) {
        let ack = FrameBuilder::tcp(client(port), to(VIP, 80)).build();
        let stats = f.stats();
        assert_eq!(
            f.expect_forwarded(&ack, &[1, 2, 3, 4]),
            was,
            "flow from port {port} kept its backend"
        );
        assert_moved(&f.stats().since(&stats), &[Counter::Tx, Counter::FlowHit]);
        // A new connection on the same tuple (SYN) is placed by the new table.
        let syn = FrameBuilder::tcp(client(port), to(VIP, 80)).syn().build();
        if f.expect_forwarded(&syn, &[1, 2, 3, 4]) != was {
            moved_for_new_flows += 1;
        }
    }
    assert!(
        moved_for_new_flows > 0,
        "the table changed for some of 64 flows, so the flow table is what kept them"
    );
}

#[test]
fn removed_backend_flows_move_and_drained_backend_flows_stay() {
    let mut f = Fixture::with_web();
    let mut on = std::collections::BTreeMap::<u8, Vec<u16>>::new();
    for port in 42000..42060 {
        on.entry(f.handshake(port)).or_default().push(port);
    }
    assert_eq!(on.len(), 3, "60 flows reach all three backends");
    f.lb.drain(&web(), backend(1)).expect("drain");
    for &port in &on[&1] {
        let ack = FrameBuilder::tcp(client(port), to(VIP, 80)).build();
        assert_eq!(
            f.expect_forwarded(&ack, &[1, 2, 3]),
            1,
            "drained backend keeps established flow {port}"
        );
    }
    for port in 43000..43030 {
        let syn = FrameBuilder::tcp(client(port), to(VIP, 80)).syn().build();
        assert_ne!(
            f.expect_forwarded(&syn, &[1, 2, 3]),
            1,
            "no new flow to a drained backend"
        );
    }
    let total = f.lb.services().expect("services")[0].traffic;
    f.lb.remove_destination(&web(), backend(2)).expect("remove");
    assert_eq!(
        f.lb.services().expect("services")[0].traffic,
        total,
        "a removed destination's traffic stays in its service's total"
    );
    for &port in &on[&2] {
        let ack = FrameBuilder::tcp(client(port), to(VIP, 80)).build();
        let stats = f.stats();
        assert_eq!(
            f.expect_forwarded(&ack, &[3]),
            3,
            "flow {port} of a removed backend moves to the only active one"
        );
        assert_moved(&f.stats().since(&stats), &[Counter::Tx, Counter::FlowStale]);
    }
}

#[test]
fn sticky_service_sends_a_client_to_one_backend() {
    let mut f = Fixture::new();
    let sticky = Service {
        id: web(),
        scheduler: Scheduler::SourceIp,
    };
    f.lb.add_service(sticky).expect("add");
    let dests: Vec<_> = (1..=4).map(|n| Destination::new(backend(n))).collect();
    f.lb.set_destinations(&web(), &dests).expect("set");
    let first = f.expect_forwarded(
        &FrameBuilder::tcp(client(1), to(VIP, 80)).syn().build(),
        &[1, 2, 3, 4],
    );
    for port in 2..40 {
        let syn = FrameBuilder::tcp(client(port), to(VIP, 80)).syn().build();
        assert_eq!(
            f.expect_forwarded(&syn, &[1, 2, 3, 4]),
            first,
            "source port {port}"
        );
    }
    let mut seen = BTreeSet::new();
    for last in 1..40u8 {
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 88, 51, last), 1000);
        seen.insert(f.expect_forwarded(
            &FrameBuilder::tcp(src, to(VIP, 80)).syn().build(),
            &[1, 2, 3, 4],
        ));
    }
    assert!(
        seen.len() >= 3,
        "different clients spread over backends: {seen:?}"
    );
}

#[test]
fn backend_behind_another_interface_is_redirected() {
    let mut f = Fixture::new();
    f.lb.add_service(Service::new(web())).expect("add");
    f.lb.set_destinations(&web(), &[Destination::new(FAR_BACKEND)])
        .expect("set");
    let syn = FrameBuilder::tcp(client(40007), to(VIP, 80)).syn().build();
    let before = f.stats();
    let ran = f.run(&syn);
    assert_eq!(ran.action, action::REDIRECT, "action");
    assert_eq!(
        &ran.frame[0..6],
        &[0x02, 0xbe, 0, 0, 1, 0x21],
        "backend MAC"
    );
    assert_moved(
        &f.stats().since(&before),
        &[Counter::Redirect, Counter::FlowNewSyn],
    );
}

#[test]
fn weights_shift_shares() {
    let mut f = Fixture::new();
    f.lb.add_service(Service::new(web())).expect("add");
    f.lb.set_destinations(
        &web(),
        &[
            Destination::new(backend(1)),
            Destination::new(backend(2)).with_weight(3),
        ],
    )
    .expect("set");
    let mut counts = [0u32; 2];
    for port in 0..800u16 {
        let src = SocketAddrV4::new(
            Ipv4Addr::new(10, 89, (port >> 8) as u8, port as u8),
            2000 + port,
        );
        let n = f.expect_forwarded(&FrameBuilder::tcp(src, to(VIP, 80)).syn().build(), &[1, 2]);
        counts[usize::from(n - 1)] += 1;
    }
    let share = f64::from(counts[1]) / 800.0;
    assert!(
        (0.68..0.82).contains(&share),
        "weight 3 of 4 took {share:.2} of new flows"
    );
}

#[test]
fn a_backend_mac_change_in_the_kernel_is_followed() {
    let mut f = Fixture::with_web();
    let syn = FrameBuilder::tcp(client(44000), to(VIP, 80)).syn().build();
    let n = f.expect_forwarded(&syn, &[1, 2, 3]);
    // The backend's NIC is swapped: the kernel learns a new MAC for the same address.
    let moved_mac = [0x02, 0xbe, 0, 0, 0x99, n];
    let mac_text = moved_mac.map(|b| format!("{b:02x}")).join(":");
    f.ns.ip(&[
        "neigh",
        "replace",
        &backend(n).to_string(),
        "lladdr",
        &mac_text,
        "dev",
        "fx0",
        "nud",
        "permanent",
    ])
    .expect("neighbour change");
    assert_eq!(
        f.lb.refresh_neighbours().expect("refresh"),
        1,
        "one destination changed"
    );
    let ack = FrameBuilder::tcp(client(44000), to(VIP, 80)).build();
    let ran = f.run(&ack);
    assert_eq!(ran.action, action::TX);
    assert_eq!(
        &ran.frame[0..6],
        &moved_mac,
        "the established flow now goes to the new MAC"
    );
    assert_eq!(
        f.lb.refresh_neighbours().expect("refresh"),
        0,
        "nothing changed since"
    );
}

#[test]
fn set_destinations_is_declarative() {
    let mut f = Fixture::with_web();
    f.lb.drain(&web(), backend(2)).expect("drain");
    f.lb.set_destinations(
        &web(),
        &[
            Destination::new(backend(2)).with_weight(5),
            Destination::new(backend(4)),
        ],
    )
    .expect("set");
    let info = f.lb.services().expect("services");
    let got: Vec<(Ipv4Addr, u32, bool)> = info[0]
        .destinations
        .iter()
        .map(|d| (d.destination.address, d.destination.weight, d.drained))
        .collect();
    assert_eq!(
        got,
        vec![(backend(2), 5, true), (backend(4), 1, false)],
        "exactly the given set; drain kept"
    );
    for port in 45000..45020 {
        let syn = FrameBuilder::tcp(client(port), to(VIP, 80)).syn().build();
        assert_eq!(
            f.expect_forwarded(&syn, &[1, 2, 3, 4]),
            4,
            "only the undrained destination takes new flows"
        );
    }
    let err = f.lb.set_destinations(
        &web(),
        &[Destination::new(backend(1)), Destination::new(backend(1))],
    );
    assert!(err.is_err(), "a destination listed twice is refused");
    let err =
        f.lb.add_destination(&web(), Destination::new(Ipv4Addr::new(10, 88, 0, 1)))
            .expect_err("local address");
    assert_eq!(
        err.to_string(),
        "backend 10.88.0.1 is an address of this host"
    );
}

#[test]
fn updating_a_service_changes_how_new_flows_hash() {
    let mut f = Fixture::with_web();
    let mut seen = BTreeSet::new();
    for port in 46000..46030 {
        seen.insert(f.expect_forwarded(
            &FrameBuilder::tcp(client(port), to(VIP, 80)).syn().build(),
            &[1, 2, 3],
        ));
    }
    assert_eq!(
        seen.len(),
        3,
        "5-tuple hashing spreads one client's connections"
    );
    f.lb.update_service(Service {
        id: web(),
        scheduler: Scheduler::SourceIp,
    })
    .expect("update");
    seen.clear();
    for port in 47000..47030 {
        seen.insert(f.expect_forwarded(
            &FrameBuilder::tcp(client(port), to(VIP, 80)).syn().build(),
            &[1, 2, 3],
        ));
    }
    assert_eq!(
        seen.len(),
        1,
        "source hashing keeps one client on one backend"
    );
}

#[test]
fn a_syn_enters_the_flow_table_only_with_its_next_packet() {
    let f = Fixture::with_web();
    for port in 48000..48010 {
        let syn = FrameBuilder::tcp(client(port), to(VIP, 80)).syn().build();
        f.expect_forwarded(&syn, &[1, 2, 3]);
    }
    assert_eq!(
        f.lb.flow_count().expect("count"),
        0,
        "SYNs alone (a SYN flood) leave the flow table alone"
    );
    for port in 48000..48010 {
        let ack = FrameBuilder::tcp(client(port), to(VIP, 80)).build();
        let before = f.stats();
        f.expect_forwarded(&ack, &[1, 2, 3]);
        assert_moved(&f.stats().since(&before), &[Counter::Tx, Counter::FlowHit]);
    }
    assert_eq!(
        f.lb.flow_count().expect("count"),
        10,
        "each handshake ACK pins its flow"
    );
}
