//! Decapsulator fixtures: real encapsulated frames through the real, verified
//! `fulcrum-decap` program with BPF_PROG_TEST_RUN. Each asserts the action, the output
//! frame byte for byte, and that exactly one counter moved by one.

use std::net::{IpAddr, SocketAddrV4};

use fulcrum::{DecapCounter, DecapStats, Decapsulator};
use fulcrum_lab::{
    frame::{self, FrameBuilder},
    frame_tunnel::{self, gue, gue_v0, gue_v0_header, ip_of, ipip, on_ethernet, udp},
    testrun::{action, run_frame},
};

use DecapCounter as C;

const HOST4: &str = "192.0.2.10";
const HOST6: &str = "2001:db8::10";
const EXTRA4: &str = "203.0.113.7";
const BALANCER4: &str = "192.0.2.1";
const BALANCER6: &str = "2001:db8::1";
const GUE_PORT: u16 = 6080;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// An inner IPv4 TCP packet, client to VIP, with a ToS to see it copied.
fn inner4() -> Vec<u8> {
    let f = FrameBuilder::tcp(
        "198.51.100.9:40000"
            .parse::<SocketAddrV4>()
            .expect("client"),
        "198.51.100.1:80".parse::<SocketAddrV4>().expect("vip"),
    )
    .payload(b"GET / HTTP/1.1\r\n\r\n")
    .build();
    ip_of(&f).to_vec()
}

/// An inner IPv6 UDP packet to a VIP.
fn inner6() -> Vec<u8> {
    let vip: std::net::Ipv6Addr = "2001:db8:100::1".parse().expect("vip");
    ip_of(&frame::ipv6_udp(vip.octets())).to_vec()
}

struct Decap {
    d: Decapsulator,
}

impl Decap {
    fn new() -> Self {
        let d = Decapsulator::builder()
            .address(ip(HOST4))
            .address(ip(HOST6))
            .address(ip(EXTRA4))
            .gue_port(GUE_PORT)
            .build()
            .expect("load the decapsulator");
        Self { d }
    }

    fn stats(&self) -> DecapStats {
        self.d.counters().expect("counters")
    }

    /// Runs `frame`; checks the action, the output and that only `counter` moved, by one.
    fn expect(&self, frame: &[u8], want_action: u32, want: &[u8], counter: DecapCounter) {
        let before = self.stats();
        let ran = run_frame(self.d.program().expect("program"), frame, 1).expect("test run");
        let moved: Vec<_> = self
            .stats()
            .since(&before)
            .iter()
            .filter(|(_, v)| *v != 0)
            .collect();
        assert_eq!(moved, vec![(counter, 1)], "counters that moved");
        assert_eq!(ran.action, want_action, "action");
        assert_eq!(ran.frame, want, "output frame");
    }

    /// The outer headers go, the inner packet passes with the EtherType of its family.
    fn expect_decapsulated(&self, frame: &[u8], inner: &[u8], vlan: Option<u16>, c: DecapCounter) {
        self.expect(frame, action::PASS, &on_ethernet(inner, vlan), c);
    }

    fn expect_passed(&self, frame: &[u8], c: DecapCounter) {
        self.expect(frame, action::PASS, frame, c);
    }

    fn expect_dropped(&self, frame: &[u8], c: DecapCounter) {
        self.expect(frame, action::DROP, frame, c);
    }
}

#[test]
fn ipip_4in4_passes_the_inner_packet() {
    let f = Decap::new();
    let inner = inner4();
    let frame = on_ethernet(&ipip(ip(BALANCER4), ip(HOST4), &inner), None);
    f.expect_decapsulated(&frame, &inner, None, C::DecapIpip);
}

#[test]
fn ipip_6in6_passes_the_inner_packet() {
    let f = Decap::new();
    let inner = inner6();
    let frame = on_ethernet(&ipip(ip(BALANCER6), ip(HOST6), &inner), None);
    f.expect_decapsulated(&frame, &inner, None, C::DecapIpip);
}

#[test]
fn ipip_4in6_and_6in4_fix_the_ethertype() {
    let f = Decap::new();
    let inner = inner4();
    let frame = on_ethernet(&ipip(ip(BALANCER6), ip(HOST6), &inner), None);
    f.expect_decapsulated(&frame, &inner, None, C::DecapIpip);
    let inner = inner6();
    let frame = on_ethernet(&ipip(ip(BALANCER4), ip(HOST4), &inner), None);
    f.expect_decapsulated(&frame, &inner, None, C::DecapIpip);
}

#[test]
fn an_explicit_address_is_accepted_like_the_interfaces_own() {
    let f = Decap::new();
    let inner = inner4();
    let frame = on_ethernet(&ipip(ip(BALANCER4), ip(EXTRA4), &inner), None);
    f.expect_decapsulated(&frame, &inner, None, C::DecapIpip);
}

#[test]
fn a_vlan_tag_is_kept() {
    let f = Decap::new();
    let inner = inner6();
    let frame = on_ethernet(&ipip(ip(BALANCER4), ip(HOST4), &inner), Some(7));
    f.expect_decapsulated(&frame, &inner, Some(7), C::DecapIpip);
    let inner = inner4();
    let frame = on_ethernet(
        &gue(ip(BALANCER6), ip(HOST6), 5555, GUE_PORT, &inner),
        Some(7),
    );
    f.expect_decapsulated(&frame, &inner, Some(7), C::DecapGue);
}

#[test]
fn gue_variant_1_both_families() {
    let f = Decap::new();
    for (outer_src, outer_dst) in [(BALANCER4, HOST4), (BALANCER6, HOST6)] {
        for inner in [inner4(), inner6()] {
            let p = gue(ip(outer_src), ip(outer_dst), 40001, GUE_PORT, &inner);
            f.expect_decapsulated(&on_ethernet(&p, None), &inner, None, C::DecapGue);
        }
    }
}

#[test]
fn gue_variant_0_without_options() {
    let f = Decap::new();
    for inner in [inner4(), inner6()] {
        let p = gue_v0(
            ip(BALANCER4),
            ip(HOST4),
            40001,
            GUE_PORT,
            gue_v0_header(&inner),
            &inner,
        );
        f.expect_decapsulated(&on_ethernet(&p, None), &inner, None, C::DecapGue);
    }
}

#[test]
fn ethernet_padding_stays_behind_the_inner_packet() {
    let f = Decap::new();
    // A small inner packet: the outer frame is padded to 60 bytes on the wire.
    let inner = FrameBuilder::udp(
        "198.51.100.9:5000".parse::<SocketAddrV4>().expect("client"),
        "198.51.100.1:53".parse::<SocketAddrV4>().expect("vip"),
    )
    .build();
    let inner = ip_of(&inner);
    let mut frame = on_ethernet(&ipip(ip(BALANCER4), ip(HOST4), inner), None);
    frame.resize(80, 0);
    let mut want = on_ethernet(inner, None);
    want.resize(80 - 20, 0);
    f.expect(&frame, action::PASS, &want, C::DecapIpip);
}

#[test]
fn gue_on_another_port_passes_untouched() {
    let f = Decap::new();
    let p = gue(ip(BALANCER4), ip(HOST4), 40001, GUE_PORT + 1, &inner4());
    f.expect_passed(&on_ethernet(&p, None), C::PassNotTunnel);
    let p = gue(ip(BALANCER6), ip(HOST6), 40001, 53, &inner6());
    f.expect_passed(&on_ethernet(&p, None), C::PassNotTunnel);
}

#[test]
fn tunnels_to_another_address_pass_untouched() {
    let f = Decap::new();
    let p = ipip(ip(BALANCER4), ip("192.0.2.99"), &inner4());
    f.expect_passed(&on_ethernet(&p, None), C::PassNotLocal);
    let p = gue(ip(BALANCER6), ip("2001:db8::99"), 1, GUE_PORT, &inner6());
    f.expect_passed(&on_ethernet(&p, None), C::PassNotLocal);
}

#[test]
fn other_traffic_passes_untouched() {
    let f = Decap::new();
    f.expect_passed(
        &frame::arp_request([192, 0, 2, 1].into(), [192, 0, 2, 10].into()),
        C::PassNotIp,
    );
    let tcp = FrameBuilder::tcp(
        "192.0.2.1:40000".parse::<SocketAddrV4>().expect("src"),
        "192.0.2.10:22".parse::<SocketAddrV4>().expect("dst"),
    )
    .build();
    f.expect_passed(&tcp, C::PassNotTunnel);
    // An IPv4 EtherType with a header cut short: nothing to tell.
    f.expect_passed(&tcp[..30], C::PassNotIp);
    // IPv6 with a Destination Options header first is not looked into.
    let mut p = ipip(ip(BALANCER6), ip(HOST6), &inner4());
    p[6] = 60;
    f.expect_passed(&on_ethernet(&p, None), C::PassNotTunnel);
}

#[test]
fn cut_short_inner_or_gue_headers_drop() {
    let f = Decap::new();
    let p = ipip(ip(BALANCER4), ip(HOST4), &inner4()[..12]);
    f.expect_dropped(&on_ethernet(&p, None), C::DropTruncated);
    let p = ipip(ip(BALANCER6), ip(HOST6), &inner6()[..39]);
    f.expect_dropped(&on_ethernet(&p, None), C::DropTruncated);
    let p = udp(ip(BALANCER4), ip(HOST4), 1, GUE_PORT, 0, &[]);
    f.expect_dropped(&on_ethernet(&p, None), C::DropTruncated);
    // The inner header in the frame, but past the outer packet's end (in the padding).
    let mut p = ipip(ip(BALANCER4), ip(HOST4), &inner4());
    p[2..4].copy_from_slice(&30u16.to_be_bytes());
    f.expect_dropped(&on_ethernet(&p, None), C::DropTruncated);
    let p = udp(ip(BALANCER4), ip(HOST4), 1, GUE_PORT, 0, &[0, 4]);
    f.expect_dropped(&on_ethernet(&p, None), C::DropTruncated);
}

#[test]
fn outer_fragments_drop() {
    let f = Decap::new();
    // IPv4 IP-in-IP, more fragments; and a later fragment.
    for frag in [0x2000u16, 0x0010] {
        let mut p = ipip(ip(BALANCER4), ip(HOST4), &inner4());
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        f.expect_dropped(&on_ethernet(&p, None), C::DropFragment);
    }
    // The first fragment of GUE.
    let mut p = gue(ip(BALANCER4), ip(HOST4), 1, GUE_PORT, &inner4());
    p[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
    f.expect_dropped(&on_ethernet(&p, None), C::DropFragment);
    // IPv6: a Fragment header (M set) before IP-in-IP and before GUE.
    for payload in [
        frame_tunnel::outer_ip(ip(BALANCER6), ip(HOST6), 4, 0, &inner4()),
        gue(ip(BALANCER6), ip(HOST6), 1, GUE_PORT, &inner4()),
    ] {
        let proto = payload[6];
        let mut p = payload[..40].to_vec();
        p[6] = 44;
        let len = u16::from_be_bytes([p[4], p[5]]) + 8;
        p[4..6].copy_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[proto, 0, 0, 1, 0, 0, 0, 9]);
        p.extend_from_slice(&payload[40..]);
        f.expect_dropped(&on_ethernet(&p, None), C::DropFragment);
    }
}

#[test]
fn later_fragments_of_udp_pass_having_no_port() {
    let f = Decap::new();
    let mut p = gue(ip(BALANCER4), ip(HOST4), 1, GUE_PORT, &inner4());
    p[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
    f.expect_passed(&on_ethernet(&p, None), C::PassNotTunnel);
}

#[test]
fn lengths_beyond_the_frame_or_below_the_headers_drop() {
    let f = Decap::new();
    let mut p = ipip(ip(BALANCER4), ip(HOST4), &inner4());
    let len = p.len() as u16 + 1;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    f.expect_dropped(&on_ethernet(&p, None), C::DropLength);
    p[2..4].copy_from_slice(&19u16.to_be_bytes());
    f.expect_dropped(&on_ethernet(&p, None), C::DropLength);
    let mut p = ipip(ip(BALANCER6), ip(HOST6), &inner6());
    let len = (p.len() - 40) as u16 + 1;
    p[4..6].copy_from_slice(&len.to_be_bytes());
    f.expect_dropped(&on_ethernet(&p, None), C::DropLength);
    // UDP length beyond the IP payload, and below 8.
    for udp_len in [1000u16, 7] {
        let mut p = gue(ip(BALANCER4), ip(HOST4), 1, GUE_PORT, &inner4());
        p[24..26].copy_from_slice(&udp_len.to_be_bytes());
        f.expect_dropped(&on_ethernet(&p, None), C::DropLength);
    }
}

#[test]
fn bad_outer_ipv4_headers_drop() {
    let f = Decap::new();
    let inner = inner4();
    // Options: header length 6 words, four bytes of NOPs.
    let p = ipip(ip(BALANCER4), ip(HOST4), &inner);
    let mut with_options = p[..20].to_vec();
    with_options[0] = 0x46;
    with_options.extend_from_slice(&[1, 1, 1, 0]);
    with_options.extend_from_slice(&inner);
    let len = with_options.len() as u16;
    with_options[2..4].copy_from_slice(&len.to_be_bytes());
    f.expect_dropped(&on_ethernet(&with_options, None), C::DropIpv4Options);
    let mut bad = p.clone();
    bad[0] = 0x44;
    f.expect_dropped(&on_ethernet(&bad, None), C::DropBadOuter);
    let mut bad = p;
    bad[0] = 0x55;
    f.expect_dropped(&on_ethernet(&bad, None), C::DropBadOuter);
    let mut frame = on_ethernet(&ipip(ip(BALANCER6), ip(HOST6), &inner), None);
    frame[14] = 0x70;
    f.expect_dropped(&frame, C::DropBadOuter);
}

#[test]
fn gue_control_options_versions_and_protocols_drop() {
    let f = Decap::new();
    let inner = inner4();
    let cases: [([u8; 4], DecapCounter); 5] = [
        ([0x20, 0, 0, 0], C::DropGueControl),
        ([0x01, 4, 0, 0], C::DropGueOptions),
        ([0x00, 4, 0x80, 0], C::DropGueOptions),
        ([0x80, 4, 0, 0], C::DropGueVersion),
        ([0x00, 17, 0, 0], C::DropGueProtocol),
    ];
    for (header, counter) in cases {
        let p = gue_v0(ip(BALANCER4), ip(HOST4), 1, GUE_PORT, header, &inner);
        f.expect_dropped(&on_ethernet(&p, None), counter);
    }
    // Variant 1 whose first nibble is neither 4 nor 6.
    let mut odd = inner.clone();
    odd[0] = 0x55;
    let p = gue(ip(BALANCER4), ip(HOST4), 1, GUE_PORT, &odd);
    f.expect_dropped(&on_ethernet(&p, None), C::DropGueVersion);
}

#[test]
fn an_inner_header_of_the_other_family_drops() {
    let f = Decap::new();
    let p = frame_tunnel::outer_ip(ip(BALANCER4), ip(HOST4), 4, 0, &inner6());
    f.expect_dropped(&on_ethernet(&p, None), C::DropInnerFamily);
    let p = frame_tunnel::outer_ip(ip(BALANCER6), ip(HOST6), 41, 0, &inner4());
    f.expect_dropped(&on_ethernet(&p, None), C::DropInnerFamily);
    let header = [0, 41, 0, 0];
    let p = gue_v0(ip(BALANCER4), ip(HOST4), 1, GUE_PORT, header, &inner4());
    f.expect_dropped(&on_ethernet(&p, None), C::DropInnerFamily);
}

#[test]
fn counters_add_up_over_a_mix() {
    let f = Decap::new();
    let program = f.d.program().expect("program");
    let inner = inner4();
    let frames = [
        on_ethernet(&ipip(ip(BALANCER4), ip(HOST4), &inner), None),
        on_ethernet(&ipip(ip(BALANCER4), ip(HOST4), &inner), None),
        on_ethernet(&gue(ip(BALANCER6), ip(HOST6), 1, GUE_PORT, &inner), None),
        on_ethernet(&ipip(ip(BALANCER4), ip("192.0.2.99"), &inner), None),
        on_ethernet(&udp(ip(BALANCER4), ip(HOST4), 1, GUE_PORT, 0, &[]), None),
    ];
    for frame in &frames {
        run_frame(program, frame, 1).expect("test run");
    }
    let stats = f.stats();
    let moved: Vec<_> = stats.iter().filter(|(_, v)| *v != 0).collect();
    assert_eq!(
        moved,
        vec![
            (C::DecapIpip, 2),
            (C::DecapGue, 1),
            (C::PassNotLocal, 1),
            (C::DropTruncated, 1)
        ]
    );
}
