//! The session fed events, as the tasks would feed it, without sockets.

use std::net::{IpAddr, Ipv6Addr};

use super::*;

fn config() -> SessionConfig {
    SessionConfig {
        local_asn: 65001,
        router_id: Ipv4Addr::new(10, 0, 2, 11),
        peer_asn: 65000,
        hold_time: 9,
        graceful_restart: Some(GrConfig {
            restart_time: 5,
            restart_state: true,
            forwarding_state: true,
        }),
        next_hop: None,
        next_hop_ipv6: None,
        passive: false,
        connect_retry: Duration::from_secs(1),
    }
}

fn peer_open(asn: u32, hold_time: u16) -> Message {
    Message::Open(Open {
        version: 4,
        my_as: u16::try_from(asn).unwrap_or(23456),
        hold_time,
        router_id: Ipv4Addr::new(10, 0, 2, 1),
        capabilities: vec![Capability::FourOctetAs(asn), Capability::RouteRefresh],
    })
}

fn sent(actions: &[Action]) -> Vec<Message> {
    (actions.iter())
        .filter_map(|a| match a {
            Action::Send(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn vip(last: u8, med: Option<u32>) -> Route {
    Route {
        med,
        local_pref: Some(200),
        communities: vec![(65000, 100)],
        ..Route::host(IpAddr::from([10, 0, 100, last]))
    }
}

/// A session brought to Established with `routes` desired; returns what it sent on the
/// way in.
fn established(routes: Vec<Route>) -> (Session, Vec<Message>) {
    established_with(
        config(),
        IpAddr::from([10, 0, 2, 11]),
        peer_open(65000, 6),
        routes,
    )
}

/// As [`established`], with this configuration, local address and peer OPEN.
fn established_with(
    config: SessionConfig,
    local: IpAddr,
    open: Message,
    routes: Vec<Route>,
) -> (Session, Vec<Message>) {
    let mut s = Session::new(config);
    s.handle(Event::Routes(routes));
    assert!(s.handle(Event::Start).contains(&Action::Connect));
    let mut out = s.handle(Event::TcpUp {
        local,
        link_local: None,
    });
    out.extend(s.handle(Event::Received(open)));
    assert_eq!(s.state(), State::OpenConfirm);
    out.extend(s.handle(Event::Received(Message::Keepalive)));
    assert_eq!(s.state(), State::Established);
    (s, sent(&out))
}

#[test]
fn our_open_offers_graceful_restart_with_restart_and_forwarding_bits() {
    let (_, sent) = established(vec![]);
    let Message::Open(open) = &sent[0] else {
        panic!("first message is not an OPEN: {sent:?}")
    };
    assert_eq!(open.hold_time, 9);
    assert_eq!(open.asn(), 65001);
    assert!(open.capabilities.contains(&Capability::RouteRefresh));
    assert!(open.capabilities.contains(&Capability::MultiProtocol {
        afi: AFI_IPV4,
        safi: SAFI_UNICAST
    }));
    assert!(
        open.capabilities
            .contains(&Capability::GracefulRestart(GracefulRestart {
                restart_state: true,
                notification: false,
                restart_time: 5,
                families: vec![
                    GrFamily {
                        afi: AFI_IPV4,
                        safi: SAFI_UNICAST,
                        forwarding: true
                    },
                    GrFamily {
                        afi: AFI_IPV6,
                        safi: SAFI_UNICAST,
                        forwarding: true
                    }
                ],
            }))
    );
    assert!(open.capabilities.contains(&Capability::MultiProtocol {
        afi: AFI_IPV6,
        safi: SAFI_UNICAST
    }));
}

#[test]
fn initial_routes_are_sent_then_end_of_rib() {
    let (s, sent) = established(vec![vip(1, Some(10)), vip(2, None)]);
    assert_eq!(sent.len(), 5, "{sent:?}");
    assert_eq!(sent[1], Message::Keepalive);
    let Message::Update(first) = &sent[2] else {
        panic!("{sent:?}")
    };
    assert_eq!(
        first.nlri,
        vec![Prefix::host(IpAddr::from([10, 0, 100, 1]))]
    );
    let a = first.attributes.as_ref().expect("attributes");
    assert_eq!(a.as_path, vec![65001]);
    assert_eq!(a.next_hop, Some(IpAddr::from([10, 0, 2, 11])));
    assert_eq!(a.med, Some(10));
    assert_eq!(a.local_pref, None, "LOCAL_PREF is for iBGP peers only");
    assert_eq!(a.communities, vec![(65000, 100)]);
    assert_eq!(
        sent[4],
        Message::Update(Update::default()),
        "End-of-RIB last"
    );
    assert_eq!(s.announced().len(), 2);
}

#[test]
fn route_changes_become_updates_and_withdrawals() {
    let (mut s, _) = established(vec![vip(1, None), vip(2, None)]);
    let out = sent(&s.handle(Event::Routes(vec![vip(2, Some(5)), vip(3, None)])));
    assert_eq!(out.len(), 3, "{out:?}");
    let Message::Update(w) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(
        w.withdrawn,
        vec![Prefix::host(IpAddr::from([10, 0, 100, 1]))]
    );
    assert!(w.attributes.is_none());
    let Message::Update(changed) = &out[1] else {
        panic!("{out:?}")
    };
    assert_eq!(changed.attributes.as_ref().and_then(|a| a.med), Some(5));
    // Nothing changes: nothing is sent.
    assert!(sent(&s.handle(Event::Routes(vec![vip(2, Some(5)), vip(3, None)]))).is_empty());
}

#[test]
fn hold_timer_expiry_sends_its_notification_and_reconnects() {
    let (mut s, _) = established(vec![vip(1, None)]);
    let out = s.handle(Event::TimerFired(Timer::Hold));
    assert_eq!(
        sent(&out),
        vec![Message::Notification(Notification::new(4, 0))]
    );
    assert!(out.contains(&Action::Close));
    assert_eq!(s.state(), State::Connect);
    assert!(s.announced().is_empty());
    assert_eq!(s.last_error(), Some("sent hold timer expired [4/0]"));
    // The next session goes through OPEN again, with the R bit cleared.
    s.handle(Event::TimerFired(Timer::ConnectRetry));
    let out = sent(&s.handle(Event::TcpUp {
        local: IpAddr::from([10, 0, 2, 11]),
        link_local: None,
    }));
    let Message::Open(open) = &out[0] else {
        panic!("{out:?}")
    };
    assert!(open.capabilities.iter().any(
        |c| matches!(c, Capability::GracefulRestart(gr) if !gr.restart_state && gr.families[0].forwarding)
    ));
}

#[test]
fn negotiated_hold_time_is_the_smaller_and_keepalives_a_third_of_it() {
    let mut s = Session::new(config());
    s.handle(Event::Start);
    s.handle(Event::TcpUp {
        local: IpAddr::from([10, 0, 2, 11]),
        link_local: None,
    });
    let out = s.handle(Event::Received(peer_open(65000, 6)));
    assert!(out.contains(&Action::StartTimer(Timer::Hold, Duration::from_secs(6))));
    assert!(out.contains(&Action::StartTimer(
        Timer::Keepalive,
        Duration::from_secs(2)
    )));
}

#[test]
fn a_wrong_peer_as_gets_bad_peer_as() {
    let mut s = Session::new(config());
    s.handle(Event::Start);
    s.handle(Event::TcpUp {
        local: IpAddr::from([10, 0, 2, 11]),
        link_local: None,
    });
    let out = s.handle(Event::Received(peer_open(65099, 90)));
    assert_eq!(
        sent(&out),
        vec![Message::Notification(Notification::with_data(
            2,
            2,
            65099u16.to_be_bytes()
        ))]
    );
    assert_eq!(s.state(), State::Connect);
}

#[test]
fn malformed_input_is_answered_with_the_decoders_notification() {
    let (mut s, _) = established(vec![]);
    let n = Notification::new(3, 1);
    let out = s.handle(Event::Malformed(n.clone()));
    assert_eq!(sent(&out), vec![Message::Notification(n)]);
    assert!(out.contains(&Action::Close));
}

#[test]
fn route_refresh_resends_every_route() {
    let (mut s, _) = established(vec![vip(1, None), vip(2, None)]);
    let out = sent(&s.handle(Event::Received(Message::RouteRefresh {
        afi: AFI_IPV4,
        safi: SAFI_UNICAST,
    })));
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out.iter()
            .all(|m| matches!(m, Message::Update(u) if u.nlri.len() == 1))
    );
}

#[test]
fn passive_peers_only_accept_and_a_second_connection_is_refused() {
    let mut s = Session::new(SessionConfig {
        passive: true,
        ..config()
    });
    let out = s.handle(Event::Start);
    assert!(!out.contains(&Action::Connect));
    assert_eq!(s.state(), State::Active);
    assert!(s.accepts_connection());
    s.handle(Event::TcpUp {
        local: IpAddr::from([10, 0, 2, 11]),
        link_local: None,
    });
    assert_eq!(s.state(), State::OpenSent);
    assert!(!s.accepts_connection());
    assert!(
        !s.handle(Event::TimerFired(Timer::ConnectRetry))
            .contains(&Action::Connect)
    );
}

#[test]
fn shutdown_withdraws_then_ceases_and_handover_is_silent() {
    let (mut s, _) = established(vec![vip(1, None)]);
    let out = sent(&s.handle(Event::Stop(Some(error::ADMIN_SHUTDOWN))));
    assert_eq!(
        out,
        vec![
            Message::Update(Update {
                withdrawn: vec![Prefix::host(IpAddr::from([10, 0, 100, 1]))],
                ..Update::default()
            }),
            Message::Notification(Notification::new(6, 2)),
        ]
    );
    assert_eq!(s.state(), State::Idle);
    let (mut s, _) = established(vec![vip(1, None)]);
    let out = s.handle(Event::Stop(None));
    assert!(sent(&out).is_empty());
    assert!(out.contains(&Action::Close));
}

#[test]
fn ibgp_routes_carry_local_pref_and_an_empty_as_path() {
    let mut s = Session::new(SessionConfig {
        peer_asn: 65001,
        ..config()
    });
    s.handle(Event::Routes(vec![vip(1, None)]));
    s.handle(Event::Start);
    s.handle(Event::TcpUp {
        local: IpAddr::from([10, 0, 2, 11]),
        link_local: None,
    });
    s.handle(Event::Received(peer_open(65001, 90)));
    let out = sent(&s.handle(Event::Received(Message::Keepalive)));
    let Message::Update(u) = &out[0] else {
        panic!("{out:?}")
    };
    let a = u.attributes.as_ref().expect("attributes");
    assert_eq!(a.local_pref, Some(200));
    assert!(a.as_path.is_empty());
}

/// A peer OPEN offering these unicast families (BIRD lists one per channel).
fn open_with_families(afis: &[u16]) -> Message {
    let Message::Open(mut open) = peer_open(65000, 6) else {
        unreachable!()
    };
    for afi in afis {
        open.capabilities.push(Capability::MultiProtocol {
            afi: *afi,
            safi: SAFI_UNICAST,
        });
    }
    Message::Open(open)
}

fn vip6(last: u16) -> Route {
    Route::host(IpAddr::from([0x2001, 0xdb8, 0x100, 0, 0, 0, 0, last]))
}

fn updates(sent: &[Message]) -> Vec<Update> {
    (sent.iter())
        .filter_map(|m| match m {
            Message::Update(u) => Some(u.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_ipv6_vip_goes_in_mp_reach_with_the_configured_next_hop_over_an_ipv4_session() {
    let hop: Ipv6Addr = "2001:db8::11".parse().expect("address");
    let config = SessionConfig {
        next_hop_ipv6: Some(hop),
        ..config()
    };
    let (s, sent) = established_with(
        config,
        IpAddr::from([10, 0, 2, 11]),
        open_with_families(&[AFI_IPV4, AFI_IPV6]),
        vec![vip(1, None), vip6(1)],
    );
    let u = updates(&sent);
    assert_eq!(u.len(), 4, "two routes, two End-of-RIBs: {sent:?}");
    assert_eq!(u[0].nlri, vec![vip(1, None).prefix]);
    assert_eq!(
        u[0].attributes.as_ref().and_then(|a| a.next_hop),
        Some(IpAddr::from([10, 0, 2, 11])),
        "IPv4 keeps the session's address"
    );
    assert_eq!(u[1].nlri, vec![vip6(1).prefix]);
    assert_eq!(
        u[1].attributes.as_ref().and_then(|a| a.next_hop),
        Some(IpAddr::V6(hop))
    );
    assert_eq!(u[2].end_of_rib_family(), Some(AFI_IPV4));
    assert_eq!(u[3].end_of_rib_family(), Some(AFI_IPV6));
    assert_eq!(s.families(), ["ipv4-unicast", "ipv6-unicast"]);
    assert!(s.not_announced().is_empty());
    assert_eq!(s.announced().len(), 2);
}

#[test]
fn a_peer_that_does_not_offer_ipv6_unicast_gets_no_ipv6_routes_and_the_status_says_why() {
    let config = SessionConfig {
        next_hop_ipv6: Some("2001:db8::11".parse().expect("address")),
        ..config()
    };
    let (mut s, sent) = established_with(
        config,
        IpAddr::from([10, 0, 2, 11]),
        open_with_families(&[AFI_IPV4]),
        vec![vip(1, None), vip6(1)],
    );
    let u = updates(&sent);
    assert_eq!(
        u.len(),
        2,
        "the IPv4 route and its End-of-RIB only: {sent:?}"
    );
    assert_eq!(u[0].nlri, vec![vip(1, None).prefix]);
    assert!(u[1].is_end_of_rib());
    assert_eq!(s.families(), ["ipv4-unicast"]);
    assert_eq!(
        s.not_announced(),
        vec![(
            vip6(1).prefix,
            "the peer did not offer IPv6 unicast".to_owned()
        )]
    );
    // Later changes and a route refresh for IPv6 send it nothing either.
    let out = sent_of(&mut s, Event::Routes(vec![vip6(1), vip6(2)]));
    assert!(
        updates(&out)
            .iter()
            .all(|u| u.nlri.iter().all(|p| p.address.is_ipv4())),
        "{out:?}"
    );
    let out = sent_of(
        &mut s,
        Event::Received(Message::RouteRefresh {
            afi: AFI_IPV6,
            safi: SAFI_UNICAST,
        }),
    );
    assert!(updates(&out).is_empty(), "{out:?}");
}

fn sent_of(s: &mut Session, event: Event) -> Vec<Message> {
    sent(&s.handle(event))
}

#[test]
fn over_an_ipv6_session_the_local_address_is_the_ipv6_next_hop_and_ipv4_needs_one_configured() {
    let local: IpAddr = "2001:db8::11".parse().expect("address");
    let (s, sent) = established_with(
        config(),
        local,
        open_with_families(&[AFI_IPV4, AFI_IPV6]),
        vec![vip(1, None), vip6(1)],
    );
    let u = updates(&sent);
    assert_eq!(u.len(), 3, "the IPv6 route and two End-of-RIBs: {sent:?}");
    assert_eq!(u[0].nlri, vec![vip6(1).prefix]);
    assert_eq!(
        u[0].attributes.as_ref().and_then(|a| a.next_hop),
        Some(local)
    );
    let why = s.not_announced();
    assert_eq!(why.len(), 1, "{why:?}");
    assert_eq!(why[0].0, vip(1, None).prefix);
    assert!(why[0].1.contains("no IPv4 next hop"), "{why:?}");

    // With an IPv4 next hop configured both go.
    let with_hop = SessionConfig {
        next_hop: Some(IpAddr::from([10, 0, 2, 11])),
        ..config()
    };
    let (s, sent) = established_with(
        with_hop,
        local,
        open_with_families(&[AFI_IPV4, AFI_IPV6]),
        vec![vip(1, None), vip6(1)],
    );
    assert_eq!(updates(&sent).len(), 4, "{sent:?}");
    assert!(s.not_announced().is_empty());

    // An IPv4 session without bgp.next_hop_ipv6 cannot carry the IPv6 route.
    let (s, _) = established_with(
        config(),
        IpAddr::from([10, 0, 2, 11]),
        open_with_families(&[AFI_IPV4, AFI_IPV6]),
        vec![vip6(1)],
    );
    assert!(s.announced().is_empty());
    assert!(
        s.not_announced()[0].1.contains("bgp.next_hop_ipv6"),
        "{:?}",
        s.not_announced()
    );
}

#[test]
fn ipv6_routes_are_withdrawn_on_change_and_shutdown_and_refreshed_alone() {
    let config = SessionConfig {
        next_hop_ipv6: Some("2001:db8::11".parse().expect("address")),
        ..config()
    };
    let (mut s, _) = established_with(
        config,
        IpAddr::from([10, 0, 2, 11]),
        open_with_families(&[AFI_IPV4, AFI_IPV6]),
        vec![vip(1, None), vip6(1), vip6(2)],
    );
    let out = sent_of(&mut s, Event::Routes(vec![vip(1, None), vip6(1)]));
    assert_eq!(
        updates(&out),
        vec![Update {
            withdrawn: vec![vip6(2).prefix],
            ..Update::default()
        }]
    );
    let out = sent_of(
        &mut s,
        Event::Received(Message::RouteRefresh {
            afi: AFI_IPV6,
            safi: SAFI_UNICAST,
        }),
    );
    let u = updates(&out);
    assert_eq!(u.len(), 1, "only the IPv6 route again: {out:?}");
    assert_eq!(u[0].nlri, vec![vip6(1).prefix]);
    let out = sent_of(&mut s, Event::Stop(Some(error::ADMIN_SHUTDOWN)));
    assert_eq!(
        out[0],
        Message::Update(Update {
            withdrawn: vec![vip(1, None).prefix, vip6(1).prefix],
            ..Update::default()
        }),
        "one UPDATE: IPv4 in the withdrawn field, IPv6 in MP_UNREACH_NLRI"
    );
}

#[test]
fn our_link_local_address_goes_beside_our_own_global_next_hop_only() {
    let local: Ipv6Addr = "2001:db8::11".parse().expect("address");
    let link_local: Ipv6Addr = "fe80::11".parse().expect("address");
    let up = |config: SessionConfig| {
        let mut s = Session::new(config);
        s.handle(Event::Routes(vec![vip6(1)]));
        s.handle(Event::Start);
        s.handle(Event::TcpUp {
            local: local.into(),
            link_local: Some(link_local),
        });
        s.handle(Event::Received(open_with_families(&[AFI_IPV6])));
        let out = sent(&s.handle(Event::Received(Message::Keepalive)));
        updates(&out)[0].attributes.clone().expect("attributes")
    };
    let a = up(config());
    assert_eq!(a.next_hop, Some(IpAddr::V6(local)));
    assert_eq!(a.link_local_next_hop, Some(link_local));
    // Another configured next hop is not on our link address: no link-local beside it.
    let a = up(SessionConfig {
        next_hop_ipv6: Some("2001:db8::99".parse().expect("address")),
        ..config()
    });
    assert_eq!(a.link_local_next_hop, None);
}
