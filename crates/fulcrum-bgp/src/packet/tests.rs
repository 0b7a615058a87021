//! Golden bytes (written out by hand from the RFCs) and malformed input.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::*;

fn header(length: u16, kind: u8) -> Vec<u8> {
    let mut h = vec![0xff; 16];
    h.extend(length.to_be_bytes());
    h.push(kind);
    h
}

fn roundtrip(message: &Message, golden: &[u8]) {
    assert_eq!(encode(message), golden, "encoding of {message:?}");
    assert_eq!(
        decode(golden).expect("decodes"),
        Some((message.clone(), golden.len()))
    );
}

fn notification_for(bytes: &[u8]) -> Notification {
    match decode(bytes) {
        Err(DecodeError(n)) => n,
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[test]
fn keepalive_is_the_bare_header() {
    roundtrip(&Message::Keepalive, &header(19, 4));
}

#[test]
fn open_with_every_capability_we_send() {
    let open = Message::Open(Open {
        version: 4,
        my_as: 65001,
        hold_time: 90,
        router_id: Ipv4Addr::new(10, 0, 2, 11),
        capabilities: vec![
            Capability::MultiProtocol {
                afi: AFI_IPV4,
                safi: SAFI_UNICAST,
            },
            Capability::RouteRefresh,
            Capability::GracefulRestart(GracefulRestart {
                restart_state: true,
                notification: false,
                restart_time: 120,
                families: vec![GrFamily {
                    afi: AFI_IPV4,
                    safi: SAFI_UNICAST,
                    forwarding: true,
                }],
            }),
            Capability::FourOctetAs(4_200_000_001),
        ],
    });
    let mut golden = header(53, 1);
    golden.extend([4, 0xfd, 0xe9, 0, 90, 10, 0, 2, 11, 24, 2, 22]);
    golden.extend([1, 4, 0, 1, 0, 1]);
    golden.extend([2, 0]);
    // R bit and 120 s; IPv4 unicast with the F bit.
    golden.extend([64, 6, 0x80, 120, 0, 1, 1, 0x80]);
    golden.extend([65, 4, 0xfa, 0x56, 0xea, 0x01]);
    roundtrip(&open, &golden);
    let Message::Open(open) = open else {
        unreachable!()
    };
    assert_eq!(open.asn(), 4_200_000_001);
}

#[test]
fn update_with_every_attribute_we_send() {
    let update = Message::Update(Update {
        withdrawn: vec![Prefix::host(IpAddr::from([10, 0, 100, 2]))],
        attributes: Some(PathAttributes {
            origin: 0,
            as_path: vec![65001],
            next_hop: Some(IpAddr::from([10, 0, 2, 11])),
            med: Some(10),
            link_local_next_hop: None,
            local_pref: Some(200),
            communities: vec![(65000, 100)],
            large_communities: vec![(65000, 1, 2)],
        }),
        nlri: vec![Prefix::host(IpAddr::from([10, 0, 100, 1]))],
        end_of_rib_afi: None,
    });
    let attrs: Vec<u8> = [
        &[0x40, 1, 1, 0][..],
        &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9],
        &[0x40, 3, 4, 10, 0, 2, 11],
        &[0x80, 4, 4, 0, 0, 0, 10],
        &[0x40, 5, 4, 0, 0, 0, 200],
        &[0xc0, 8, 4, 0xfd, 0xe8, 0, 100],
        &[0xc0, 32, 12, 0, 0, 0xfd, 0xe8, 0, 0, 0, 1, 0, 0, 0, 2],
    ]
    .concat();
    let mut golden = header(0, 2);
    golden.extend([0, 5, 32, 10, 0, 100, 2]);
    golden.extend((attrs.len() as u16).to_be_bytes());
    golden.extend(&attrs);
    golden.extend([32, 10, 0, 100, 1]);
    let length = golden.len() as u16;
    golden[16..18].copy_from_slice(&length.to_be_bytes());
    roundtrip(&update, &golden);
}

#[test]
fn end_of_rib_notification_and_route_refresh() {
    roundtrip(
        &Message::Update(Update::default()),
        &[header(23, 2), vec![0, 0, 0, 0]].concat(),
    );
    roundtrip(
        &Message::Notification(Notification::new(error::CEASE, error::ADMIN_SHUTDOWN)),
        &[header(21, 3), vec![6, 2]].concat(),
    );
    roundtrip(
        &Message::RouteRefresh {
            afi: AFI_IPV4,
            safi: SAFI_UNICAST,
        },
        &[header(23, 5), vec![0, 1, 0, 1]].concat(),
    );
}

#[test]
fn ipv6_routes_travel_in_mp_reach_and_unreach() {
    let v6: IpAddr = "2001:db8::1".parse().expect("address");
    let update = Message::Update(Update {
        withdrawn: vec![Prefix::host("2001:db8::2".parse().expect("address"))],
        attributes: Some(PathAttributes {
            origin: 0,
            as_path: vec![65001],
            next_hop: Some("2001:db8::ff".parse().expect("address")),
            ..PathAttributes::default()
        }),
        nlri: vec![Prefix::host(v6)],
        end_of_rib_afi: None,
    });
    let bytes = encode(&update);
    assert_eq!(
        decode(&bytes).expect("decodes"),
        Some((update, bytes.len()))
    );
}

/// 2001:db8::ff, the next hop in the IPv6 goldens.
const HOP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff,
];
/// fe80::2, its link-local companion.
const LINK_LOCAL: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// 2001:db8:100::1, an IPv6 VIP.
const VIP6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

fn with_length(mut golden: Vec<u8>) -> Vec<u8> {
    let length = golden.len() as u16;
    golden[16..18].copy_from_slice(&length.to_be_bytes());
    golden
}

#[test]
fn open_offering_ipv6_unicast_and_preserving_both_families() {
    let open = Message::Open(Open {
        version: 4,
        my_as: 65001,
        hold_time: 90,
        router_id: Ipv4Addr::new(10, 0, 2, 11),
        capabilities: vec![
            Capability::MultiProtocol {
                afi: AFI_IPV4,
                safi: SAFI_UNICAST,
            },
            Capability::MultiProtocol {
                afi: AFI_IPV6,
                safi: SAFI_UNICAST,
            },
            Capability::GracefulRestart(GracefulRestart {
                restart_state: false,
                notification: false,
                restart_time: 120,
                families: vec![
                    GrFamily {
                        afi: AFI_IPV4,
                        safi: SAFI_UNICAST,
                        forwarding: true,
                    },
                    GrFamily {
                        afi: AFI_IPV6,
                        safi: SAFI_UNICAST,
                        forwarding: true,
                    },
                ],
            }),
        ],
    });
    let mut golden = header(0, 1);
    golden.extend([4, 0xfd, 0xe9, 0, 90, 10, 0, 2, 11, 26, 2, 24]);
    golden.extend([1, 4, 0, 1, 0, 1]);
    // AFI 2 (IPv6), reserved, SAFI 1 (unicast).
    golden.extend([1, 4, 0, 2, 0, 1]);
    golden.extend([64, 10, 0, 120, 0, 1, 1, 0x80, 0, 2, 1, 0x80]);
    roundtrip(&open, &with_length(golden));
}

#[test]
fn an_ipv6_route_has_mp_reach_with_a_global_and_link_local_next_hop() {
    let update = Message::Update(Update {
        attributes: Some(PathAttributes {
            origin: 0,
            as_path: vec![65001],
            next_hop: Some(IpAddr::from(HOP6)),
            link_local_next_hop: Some(LINK_LOCAL.into()),
            med: Some(10),
            ..PathAttributes::default()
        }),
        nlri: vec![Prefix::host(IpAddr::from(VIP6))],
        ..Update::default()
    });
    let mut reach = vec![0x80, 14, 54, 0, 2, 1, 32];
    reach.extend(HOP6);
    reach.extend(LINK_LOCAL);
    reach.extend([0, 128]);
    reach.extend(VIP6);
    let attrs: Vec<u8> = [
        &[0x40, 1, 1, 0][..],
        &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9],
        // No NEXT_HOP attribute: the next hop is in MP_REACH_NLRI.
        &[0x80, 4, 4, 0, 0, 0, 10],
        &reach,
    ]
    .concat();
    let mut golden = header(0, 2);
    golden.extend([0, 0]);
    golden.extend((attrs.len() as u16).to_be_bytes());
    golden.extend(&attrs);
    roundtrip(&update, &with_length(golden));

    // Without the link-local address the next hop is 16 bytes.
    let Message::Update(mut global_only) = update else {
        unreachable!()
    };
    if let Some(a) = &mut global_only.attributes {
        a.link_local_next_hop = None;
        a.med = None;
    }
    let mut reach = vec![0x80, 14, 38, 0, 2, 1, 16];
    reach.extend(HOP6);
    reach.extend([0, 128]);
    reach.extend(VIP6);
    let mut golden = header(0, 2);
    golden.extend([0, 0, 0, 13 + 41]);
    golden.extend([0x40, 1, 1, 0, 0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9]);
    golden.extend(reach);
    roundtrip(&Message::Update(global_only), &with_length(golden));
}

#[test]
fn an_ipv6_withdrawal_is_mp_unreach_alone_and_empty_is_end_of_rib() {
    let withdrawal = Message::Update(Update {
        withdrawn: vec![Prefix::host(IpAddr::from(VIP6))],
        ..Update::default()
    });
    let mut golden = header(0, 2);
    golden.extend([0, 0, 0, 23, 0x80, 15, 20, 0, 2, 1, 128]);
    golden.extend(VIP6);
    roundtrip(&withdrawal, &with_length(golden));

    let end_of_rib = Update::end_of_rib(AFI_IPV6);
    let golden = with_length([header(0, 2), vec![0, 0, 0, 6, 0x80, 15, 3, 0, 2, 1]].concat());
    roundtrip(&Message::Update(end_of_rib.clone()), &golden);
    assert_eq!(end_of_rib.end_of_rib_family(), Some(AFI_IPV6));
    assert!(!end_of_rib.is_end_of_rib(), "not the IPv4 one");
    assert_eq!(Update::end_of_rib(AFI_IPV4), Update::default());
    assert_eq!(Update::default().end_of_rib_family(), Some(AFI_IPV4));
    let Message::Update(w) = withdrawal else {
        unreachable!()
    };
    assert_eq!(w.end_of_rib_family(), None);
}

#[test]
fn mp_reach_errors_get_their_notifications() {
    let origin_path = [0x40, 1, 1, 0, 0x40, 2, 0];
    // A 4-byte IPv6 next hop: Optional Attribute Error with the attribute.
    let mut bad_hop = vec![0x80, 14, 26, 0, 2, 1, 4, 10, 0, 2, 11, 0, 128];
    bad_hop.extend(VIP6);
    let attrs = [&origin_path[..], &bad_hop].concat();
    assert_eq!(
        notification_for(&update_bytes(&[], &attrs, &[])),
        Notification::with_data(error::UPDATE, 9, bad_hop.clone())
    );
    // An IPv6 route without ORIGIN: Missing Well-known Attribute, ORIGIN.
    let mut reach = vec![0x80, 14, 38, 0, 2, 1, 16];
    reach.extend(HOP6);
    reach.extend([0, 128]);
    reach.extend(VIP6);
    let attrs = [&[0x40, 2, 0][..], &reach].concat();
    assert_eq!(
        notification_for(&update_bytes(&[], &attrs, &[])),
        Notification::with_data(error::UPDATE, 3, [1])
    );
    // A prefix longer than 128: Invalid Network Field.
    let mut long = vec![0x80, 14, 38, 0, 2, 1, 16];
    long.extend(HOP6);
    long.extend([0, 129]);
    long.extend(VIP6);
    let attrs = [&origin_path[..], &long].concat();
    assert_eq!(
        notification_for(&update_bytes(&[], &attrs, &[])).subcode,
        10
    );
}

#[test]
fn an_incomplete_message_waits_for_more() {
    let bytes = encode(&Message::Keepalive);
    assert_eq!(decode(&bytes[..18]), Ok(None));
    let open = [header(29, 1), vec![4, 0, 1, 0, 90, 1, 1, 1, 1]].concat();
    assert_eq!(decode(&open[..25]), Ok(None));
}

#[test]
fn header_errors_get_their_notifications() {
    let mut bad_marker = header(19, 4);
    bad_marker[3] = 0;
    assert_eq!(notification_for(&bad_marker), Notification::new(1, 1));
    assert_eq!(
        notification_for(&header(18, 4)),
        Notification::with_data(1, 2, [0, 18])
    );
    assert_eq!(
        notification_for(&[header(20, 4), vec![0]].concat()),
        Notification::with_data(1, 2, [0, 20])
    );
    assert_eq!(
        notification_for(&header(5000, 2)),
        Notification::with_data(1, 2, [0x13, 0x88])
    );
    assert_eq!(
        notification_for(&header(19, 9)),
        Notification::with_data(1, 3, [9])
    );
}

fn open_bytes(version: u8, hold: u16, id: [u8; 4], params: &[u8]) -> Vec<u8> {
    let mut body = vec![version, 0xfd, 0xe8];
    body.extend(hold.to_be_bytes());
    body.extend(id);
    body.push(params.len() as u8);
    body.extend(params);
    [header(19 + body.len() as u16, 1), body].concat()
}

#[test]
fn open_errors_get_their_notifications() {
    assert_eq!(
        notification_for(&open_bytes(3, 90, [1, 1, 1, 1], &[])),
        Notification::with_data(2, 1, [0, 4])
    );
    assert_eq!(
        notification_for(&open_bytes(4, 2, [1, 1, 1, 1], &[])),
        Notification::new(2, 6)
    );
    assert_eq!(
        notification_for(&open_bytes(4, 90, [0, 0, 0, 0], &[])),
        Notification::new(2, 3)
    );
    assert_eq!(
        notification_for(&open_bytes(4, 90, [1, 1, 1, 1], &[1, 0])),
        Notification::new(2, 4)
    );
    // A capability longer than its parameter.
    assert_eq!(
        notification_for(&open_bytes(4, 90, [1, 1, 1, 1], &[2, 2, 65, 4])),
        Notification::new(2, 0)
    );
}

fn update_bytes(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = (withdrawn.len() as u16).to_be_bytes().to_vec();
    body.extend(withdrawn);
    body.extend((attrs.len() as u16).to_be_bytes());
    body.extend(attrs);
    body.extend(nlri);
    [header(19 + body.len() as u16, 2), body].concat()
}

#[test]
fn update_errors_get_their_notifications() {
    let origin = [0x40, 1, 1, 0];
    let path = [0x40, 2, 0];
    let hop = [0x40, 3, 4, 10, 0, 0, 1];
    let nlri = [32, 10, 0, 100, 1];
    // Withdrawn length past the end.
    assert_eq!(
        notification_for(&[header(23, 2), vec![0, 9, 0, 0]].concat()),
        Notification::new(3, 1)
    );
    assert_eq!(
        notification_for(&update_bytes(&[], &[&origin[..], &path].concat(), &nlri)),
        Notification::with_data(3, 3, [3])
    );
    assert_eq!(
        notification_for(&update_bytes(
            &[],
            &[&[0x40, 1, 1, 7][..], &path, &hop].concat(),
            &nlri
        )),
        Notification::with_data(3, 6, [0x40, 1, 1, 7])
    );
    assert_eq!(
        notification_for(&update_bytes(
            &[],
            &[&[0x40, 1, 2, 0, 0][..], &path, &hop].concat(),
            &nlri
        )),
        Notification::with_data(3, 5, [0x40, 1, 2, 0, 0])
    );
    assert_eq!(
        notification_for(&update_bytes(
            &[],
            &[&[0x80, 1, 1, 0][..], &path, &hop].concat(),
            &nlri
        )),
        Notification::with_data(3, 4, [0x80, 1, 1, 0])
    );
    assert_eq!(
        notification_for(&update_bytes(&[], &[origin, origin].concat(), &[])),
        Notification::new(3, 1)
    );
    assert_eq!(
        notification_for(&update_bytes(
            &[],
            &[&origin[..], &path, &hop].concat(),
            &[33, 1]
        )),
        Notification::new(3, 10)
    );
    assert_eq!(
        notification_for(&update_bytes(&[], &[0x40, 99, 0], &[])),
        Notification::with_data(3, 2, [0x40, 99, 0])
    );
}

proptest! {
    /// Random bytes, with or without a valid header in front, never panic the decoder,
    /// and whatever it accepts it accepts whole.
    #[test]
    fn random_bytes_never_panic(kind in 0u8..7, body in proptest::collection::vec(any::<u8>(), 0..200), raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode(&raw);
        let bytes = [header(19 + body.len() as u16, kind), body].concat();
        if let Ok(Some((message, used))) = decode(&bytes) {
            prop_assert_eq!(used, bytes.len());
            let _ = encode(&message);
        }
    }

    /// Updates we build decode to themselves.
    #[test]
    fn built_updates_roundtrip(hosts in proptest::collection::vec(any::<[u8; 4]>(), 1..20), med in proptest::option::of(any::<u32>()), communities in proptest::collection::vec(any::<(u16, u16)>(), 0..10)) {
        let nlri: Vec<Prefix> = hosts.iter().map(|h| Prefix::host(IpAddr::from(*h))).collect();
        let update = Message::Update(Update {
            withdrawn: nlri.clone(),
            attributes: Some(PathAttributes {
                as_path: vec![65001, 4_200_000_000],
                next_hop: Some(IpAddr::from([10, 0, 0, 1])),
                med,
                communities,
                ..PathAttributes::default()
            }),
            nlri,
            end_of_rib_afi: None,
        });
        let bytes = encode(&update);
        prop_assert_eq!(decode(&bytes), Ok(Some((update, bytes.len()))));
    }

    /// IPv6 updates we build (MP_REACH_NLRI, MP_UNREACH_NLRI) decode to themselves.
    #[test]
    fn built_ipv6_updates_roundtrip(hosts in proptest::collection::vec(any::<[u8; 16]>(), 1..20), withdrawn in proptest::collection::vec(any::<[u8; 16]>(), 0..20), link_local in proptest::option::of(any::<[u8; 16]>()), med in proptest::option::of(any::<u32>())) {
        let update = Message::Update(Update {
            withdrawn: withdrawn.iter().map(|h| Prefix::host(IpAddr::from(*h))).collect(),
            attributes: Some(PathAttributes {
                as_path: vec![65001],
                next_hop: Some(IpAddr::from(HOP6)),
                link_local_next_hop: link_local.map(Into::into),
                med,
                ..PathAttributes::default()
            }),
            nlri: hosts.iter().map(|h| Prefix::host(IpAddr::from(*h))).collect(),
            end_of_rib_afi: None,
        });
        let bytes = encode(&update);
        prop_assert_eq!(decode(&bytes), Ok(Some((update, bytes.len()))));
    }
}
