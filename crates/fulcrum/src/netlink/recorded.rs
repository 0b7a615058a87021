//! Decoding tested on recorded kernel answers (`recorded/*.hex`, see its README) and on
//! hand-built messages for what this kernel cannot produce (VLAN links).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libc::{NDA_DST, NDA_LLADDR, NUD_NONE, NUD_PERMANENT, NUD_REACHABLE, NUD_STALE};
use libc::{NUD_DELAY, NUD_NOARP, NUD_PROBE, RTM_NEWLINK, RTM_NEWNEIGH, RTM_NEWROUTE};
use proptest::prelude::*;

use super::wire::{self, AF_INET, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, Reply};
use super::{Link, Neighbour, NetlinkError, Route, RouteKind, VlanLink};

fn unhex(hex: &str) -> Vec<u8> {
    let hex = hex.trim();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A recorded message's bytes, and its payload after the nlmsghdr, checked to be of `ty`.
fn recorded(hex: &str, ty: u16) -> (Vec<u8>, Vec<u8>) {
    let bytes = unhex(hex);
    let msgs = wire::tlvs(&bytes, wire::message).expect("framing");
    let [(header, payload)] = msgs[..] else {
        panic!("one message expected, got {}", msgs.len())
    };
    assert_eq!(header.ty, ty);
    let payload = payload.to_vec();
    (bytes, payload)
}

fn v6(s: &str) -> IpAddr {
    s.parse::<Ipv6Addr>().expect("IPv6").into()
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    Ipv4Addr::new(a, b, c, d).into()
}

const ROUTE6_GATEWAY: &str = include_str!("recorded/route6_gateway.hex");
const ROUTE4_MTU: &str = include_str!("recorded/route4_mtu.hex");
const ROUTE4_VIA6: &str = include_str!("recorded/route4_via6.hex");
const ROUTE6_MTU: &str = include_str!("recorded/route6_mtu.hex");
const ROUTE6_PMTU: &str = include_str!("recorded/route6_pmtu.hex");
const LINK_MTU: &str = include_str!("recorded/link_mtu.hex");
const LINK6_MTU: &str = include_str!("recorded/link6_mtu.hex");
const NEIGH6: &str = include_str!("recorded/neigh6.hex");
const NEIGH_DUMP: &str = include_str!("recorded/neigh_dump.hex");

#[test]
fn ipv6_route_through_a_gateway() {
    let (_, payload) = recorded(ROUTE6_GATEWAY, RTM_NEWROUTE);
    let route = wire::parse_route(&payload).expect("parse");
    let want = Route {
        ifindex: 2,
        gateway: Some(v6("2001:db8:99::2")),
        prefsrc: Some(v6("2001:db8:99::1")),
        kind: RouteKind::Unicast,
        mtu: None,
    };
    assert_eq!(route, want);
    assert_eq!(route.next_hop(v6("2001:db8:200::10")), v6("2001:db8:99::2"));
}

#[test]
fn ipv4_route_with_an_mtu() {
    let (_, payload) = recorded(ROUTE4_MTU, RTM_NEWROUTE);
    let route = wire::parse_route(&payload).expect("parse");
    let want = Route {
        ifindex: 2,
        gateway: Some(v4(10, 99, 0, 2)),
        prefsrc: Some(v4(10, 99, 0, 1)),
        kind: RouteKind::Unicast,
        mtu: Some(1300),
    };
    assert_eq!(route, want);
}

#[test]
fn ipv6_route_with_an_mtu() {
    // The same RTA_METRICS / RTAX_MTU as IPv4's, after RTA_PREFSRC rather than last.
    let (_, payload) = recorded(ROUTE6_MTU, RTM_NEWROUTE);
    let route = wire::parse_route(&payload).expect("parse");
    let want = Route {
        ifindex: 2,
        gateway: Some(v6("2001:db8:99::2")),
        prefsrc: Some(v6("2001:db8:99::1")),
        kind: RouteKind::Unicast,
        mtu: Some(1300),
    };
    assert_eq!(route, want);
}

#[test]
fn ipv6_path_mtu_learnt_from_packet_too_big() {
    // A cached exception (RTM_F_CLONED) carries the learnt MTU in RTA_METRICS too.
    let (_, payload) = recorded(ROUTE6_PMTU, RTM_NEWROUTE);
    let route = wire::parse_route(&payload).expect("parse");
    assert_eq!(
        u32::from_ne_bytes(payload[8..12].try_into().expect("rtm_flags")),
        0x200
    );
    assert_eq!(
        (route.ifindex, route.gateway, route.mtu),
        (3, Some(v6("2001:db8:99::2")), Some(1300))
    );
}

#[test]
fn ipv4_route_via_an_ipv6_router() {
    let (_, payload) = recorded(ROUTE4_VIA6, RTM_NEWROUTE);
    let route = wire::parse_route(&payload).expect("parse");
    assert_eq!(route.gateway, Some(v6("2001:db8:99::2")));
    assert_eq!(route.prefsrc, Some(v4(10, 99, 0, 1)));
    assert_eq!(
        (route.ifindex, route.kind, route.mtu),
        (2, RouteKind::Unicast, None)
    );
}

#[test]
fn link_with_an_mtu_is_not_a_vlan() {
    // A veth: IFLA_LINK names its peer (in another namespace), IFLA_INFO_KIND is "veth".
    let (_, payload) = recorded(LINK_MTU, RTM_NEWLINK);
    let link = wire::parse_link(&payload).expect("parse");
    let want = Link {
        index: 2,
        name: "ve0".into(),
        mac: Some([2, 0, 0, 0, 0, 0x0a]),
        mtu: 1400,
        mtu6: Some(1400),
        vlan: None,
    };
    assert_eq!(link, want);
}

#[test]
fn link_with_a_lower_ipv6_mtu() {
    // `sysctl net.ipv6.conf.ve0.mtu=1320`: IFLA_MTU stays 1400.
    let (_, payload) = recorded(LINK6_MTU, RTM_NEWLINK);
    let link = wire::parse_link(&payload).expect("parse");
    assert_eq!((link.mtu, link.mtu6), (1400, Some(1320)));
}

#[test]
fn ipv6_neighbour() {
    let (_, payload) = recorded(NEIGH6, RTM_NEWNEIGH);
    let n = wire::parse_neighbour(&payload)
        .expect("parse")
        .expect("IPv6");
    let want = Neighbour {
        ifindex: 2,
        addr: v6("2001:db8:99::2"),
        mac: Some([2, 0, 0, 0, 0, 0x0b]),
        state: NUD_REACHABLE,
    };
    assert_eq!(n, want);
    assert!(n.usable());
}

#[test]
fn a_dump_of_both_families_in_one_datagram() {
    // Request seq 5; the datagram ends with NLMSG_DONE.
    let datagram = unhex(NEIGH_DUMP);
    let mut answers = Vec::new();
    let done = wire::collect(&datagram, 5, "dump", RTM_NEWNEIGH, &mut answers).expect("collect");
    assert!(done, "NLMSG_DONE ends the dump");
    let all: Vec<Neighbour> = answers
        .iter()
        .filter_map(|a| wire::parse_neighbour(a).expect("parse"))
        .collect();
    let mac = Some([2, 0, 0, 0, 0, 0x0b]);
    let seen: Vec<_> = all.iter().map(|n| (n.addr, n.mac, n.usable())).collect();
    let want = vec![
        (v4(10, 99, 0, 2), mac, true),       // PERMANENT
        (v6("2001:db8:99::2"), mac, true),   // STALE
        (v6("2001:db8:99::3"), None, false), // INCOMPLETE
        // The kernel's own NOARP entry for the MLDv2 reports' group.
        (v6("ff02::16"), Some([0x33, 0x33, 0, 0, 0, 0x16]), true),
    ];
    assert_eq!(seen, want);
    // The same datagram answering an earlier request is skipped whole.
    let mut stale = Vec::new();
    let done = wire::collect(&datagram, 6, "dump", RTM_NEWNEIGH, &mut stale).expect("collect");
    assert!(!done && stale.is_empty());
}

/// One attribute, padded: rta_len, type, data.
fn nla(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut a = [
        &(4 + data.len() as u16).to_ne_bytes()[..],
        &ty.to_ne_bytes(),
        data,
    ]
    .concat();
    a.resize((a.len() + 3) & !3, 0);
    a
}

/// RTM_NEWLINK payload as the kernel sends it for `ip link add link eth0 name eth0.100 type
/// vlan [protocol PROTO] id 100` (ifindex 7, parent 2), in the kernel's attribute order
/// (rtnl_fill_ifinfo, then vlan_fill_info), plus `extra` attributes.
fn vlan_link(protocol: u16, extra: &[u8]) -> Vec<u8> {
    const NESTED: u16 = 0x8000;
    let mut ifi = [0u8; 16];
    ifi[2..4].copy_from_slice(&1u16.to_ne_bytes()); // ARPHRD_ETHER
    ifi[4..8].copy_from_slice(&7u32.to_ne_bytes());
    let vlan_data = [
        nla(5, &protocol.to_be_bytes()), // IFLA_VLAN_PROTOCOL, network order
        nla(1, &100u16.to_ne_bytes()),   // IFLA_VLAN_ID
        nla(2, &[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]), // IFLA_VLAN_FLAGS: REORDER_HDR
    ]
    .concat();
    let info = [nla(1, b"vlan\0"), nla(NESTED | 2, &vlan_data)].concat();
    [
        &ifi[..],
        &nla(3, b"eth0.100\0"),           // IFLA_IFNAME
        &nla(13, &1000u32.to_ne_bytes()), // IFLA_TXQLEN
        &nla(4, &1500u32.to_ne_bytes()),  // IFLA_MTU
        &nla(5, &2u32.to_ne_bytes()),     // IFLA_LINK
        &nla(1, &[2, 0, 0, 0, 1, 0x64]),  // IFLA_ADDRESS
        &nla(2, &[0xff; 6]),              // IFLA_BROADCAST
        &nla(NESTED | 18, &info),         // IFLA_LINKINFO
        extra,
    ]
    .concat()
}

#[test]
fn vlan_sub_interface_names_its_parent_and_id() {
    let link = wire::parse_link(&vlan_link(0x8100, &[])).expect("parse");
    let want = Link {
        index: 7,
        name: "eth0.100".into(),
        mac: Some([2, 0, 0, 0, 1, 0x64]),
        mtu: 1500,
        mtu6: None,
        vlan: Some(VlanLink { parent: 2, id: 100 }),
    };
    assert_eq!(link, want);
}

#[test]
fn qinq_and_foreign_parents_are_not_vlan_links() {
    // 802.1ad: the data plane only writes 802.1Q tags.
    let qinq = wire::parse_link(&vlan_link(0x88a8, &[])).expect("parse");
    assert_eq!((qinq.name.as_str(), qinq.vlan), ("eth0.100", None));
    // IFLA_LINK_NETNSID: the parent index is another namespace's.
    let foreign = vlan_link(0x8100, &nla(37, &0u32.to_ne_bytes()));
    assert_eq!(wire::parse_link(&foreign).expect("parse").vlan, None);
}

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
fn parses_a_hand_built_ipv4_neighbour_message() {
    let datagram = neighbour_datagram();
    let msgs = wire::tlvs(&datagram, wire::message).expect("parse");
    let [(header, payload)] = msgs[..] else {
        panic!("one message expected: {msgs:?}")
    };
    assert_eq!((header.ty, header.seq), (RTM_NEWNEIGH, 7));
    let n = wire::parse_neighbour(payload)
        .expect("parse")
        .expect("IPv4");
    assert_eq!(
        (n.ifindex, n.addr, n.mac, n.state),
        (3, v4(10, 0, 0, 2), Some([2, 0, 0, 0, 0, 1]), 2)
    );
    assert!(n.usable());
}

#[test]
fn an_address_of_the_wrong_length_is_malformed() {
    // The IPv4 message relabelled AF_INET6: its 4-byte NDA_DST cannot be an IPv6 address.
    let mut datagram = neighbour_datagram();
    datagram[NLMSG_HDRLEN] = libc::AF_INET6 as u8;
    assert!(malformed(wire::parse_neighbour(&datagram[NLMSG_HDRLEN..])));
    // Other families (bridge FDB entries) are skipped, not errors.
    datagram[NLMSG_HDRLEN] = libc::AF_BRIDGE as u8;
    assert_eq!(
        wire::parse_neighbour(&datagram[NLMSG_HDRLEN..]).ok(),
        Some(None)
    );
}

/// Every prefix of `bytes` either parses or is Malformed: never a panic.
fn cuts_are_malformed_not_panics<T: std::fmt::Debug>(
    bytes: &[u8],
    parse: fn(&[u8]) -> Result<T, NetlinkError>,
) {
    for cut in 0..bytes.len() {
        let result = parse(&bytes[..cut]);
        assert!(result.is_ok() || malformed(result), "cut at {cut}");
    }
}

#[test]
fn truncated_input_is_malformed_not_a_panic() {
    let datagram = neighbour_datagram();
    for cut in 1..datagram.len() {
        assert!(
            malformed(wire::tlvs(&datagram[..cut], wire::message)),
            "cut at {cut}"
        );
    }
    cuts_are_malformed_not_panics(&datagram[NLMSG_HDRLEN..], wire::parse_neighbour);
    assert!(malformed(wire::parse_neighbour(
        &datagram[NLMSG_HDRLEN..][..22]
    )));
    for hex in [
        ROUTE6_GATEWAY,
        ROUTE4_MTU,
        ROUTE4_VIA6,
        ROUTE6_MTU,
        ROUTE6_PMTU,
    ] {
        cuts_are_malformed_not_panics(&recorded(hex, RTM_NEWROUTE).1, wire::parse_route);
    }
    cuts_are_malformed_not_panics(&recorded(LINK_MTU, RTM_NEWLINK).1, wire::parse_link);
    cuts_are_malformed_not_panics(&recorded(LINK6_MTU, RTM_NEWLINK).1, wire::parse_link);
    cuts_are_malformed_not_panics(&vlan_link(0x8100, &[]), wire::parse_link);
    cuts_are_malformed_not_panics(&recorded(NEIGH6, RTM_NEWNEIGH).1, wire::parse_neighbour);
    // Lengths below the header size would never advance: refused, not looped on.
    assert!(malformed(wire::tlvs(&[0, 0, 1, 0], wire::attr)));
    assert!(malformed(wire::tlvs(&[0; 16], wire::message)));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = wire::tlvs(&bytes, wire::message);
        let _ = wire::parse_route(&bytes);
        let _ = wire::parse_link(&bytes);
        let _ = wire::parse_neighbour(&bytes);
    }
}

#[test]
fn requests_carry_the_family_and_host_length() {
    assert_eq!(wire::rtmsg(v4(10, 0, 0, 1))[..2], [AF_INET, 32]);
    assert_eq!(
        wire::rtmsg(v6("2001:db8::1"))[..2],
        [libc::AF_INET6 as u8, 128]
    );
    let (af, octets) = wire::family(v6("2001:db8::1"));
    assert_eq!(
        (af, octets.len(), octets[2]),
        (libc::AF_INET6 as u8, 16, 0x0d)
    );
}

#[test]
fn attributes_are_four_byte_aligned() {
    let attrs: [(u16, &[u8]); 2] = [(NDA_DST, &[0xaa]), (NDA_LLADDR, &[1, 2, 3, 4, 5, 6])];
    let msg = wire::encode(
        RTM_NEWNEIGH,
        NLM_F_REQUEST,
        9,
        &wire::ndmsg(AF_INET, 3, 0, 0),
        &attrs,
    );
    assert_eq!(msg.len(), 16 + 12 + 8 + 12);
    assert_eq!(
        (wire::u32_at(&msg, 0), wire::u32_at(&msg, 8)),
        (Some(48), Some(9))
    );
    assert_eq!(msg[28..36], [5, 0, 1, 0, 0xaa, 0, 0, 0]); // rta_len 5, padded to 8
    assert_eq!(wire::u16_at(&msg, 36), Some(10));
    assert_eq!(msg[46..48], [0, 0]);
    assert_eq!(wire::tlvs(&msg[28..], wire::attr).expect("parse"), attrs);
}

#[test]
fn replies_end_skip_or_fail() {
    let errno = |e: i32| e.to_ne_bytes();
    assert_eq!(
        wire::reply("t", NLMSG_ERROR, &errno(0)).ok(),
        Some(Reply::End)
    );
    let refused = wire::reply("t", NLMSG_ERROR, &errno(-libc::ENOENT)).expect_err("refused");
    assert_eq!(refused.errno(), Some(libc::ENOENT));
    assert_eq!(
        wire::reply("t", NLMSG_DONE, &errno(0)).ok(),
        Some(Reply::End)
    );
    let busy = wire::reply("t", NLMSG_DONE, &errno(-libc::EBUSY)).expect_err("busy");
    assert_eq!(busy.errno(), Some(libc::EBUSY));
    assert_eq!(wire::reply("t", 1, &[]).ok(), Some(Reply::Skip));
    assert_eq!(wire::reply("t", RTM_NEWNEIGH, &[]).ok(), Some(Reply::Data));
    assert!(malformed(wire::reply("t", NLMSG_ERROR, &[0])));
}

#[test]
fn usable_needs_a_resolved_state_and_a_mac() {
    let n = |state, mac| {
        Neighbour {
            ifindex: 1,
            addr: v6("::1"),
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
