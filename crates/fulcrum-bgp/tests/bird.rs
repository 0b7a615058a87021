//! The speaker against BIRD 2 for IPv6 unicast: BIRD runs in one namespace, the speaker
//! (this test's thread) in another, on one dual-stack link. Each test reads BIRD's own
//! view (`birdc show route`, `show protocols all`). The same behaviour through
//! `fulcrum run` (health-driven announcements) is in crates/fulcrum-cli/tests/bgp.rs.

use std::{
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};

use fulcrum_bgp::{GrConfig, PeerConfig, PeerStatus, Route, Speaker, SpeakerConfig};
use fulcrum_lab::{
    bgp_peers::{Bird, PeerLink},
    bird::ip_next_hops,
};

const VIP4: &str = "10.79.99.1/32";
const VIP6: &str = "fd00:79:99::1/128";
const LIMIT: Duration = Duration::from_secs(30);

fn routes(which: &[&str]) -> Vec<Route> {
    (which.iter())
        .map(|p| {
            Route::host(
                p.split('/')
                    .next()
                    .and_then(|a| a.parse().ok())
                    .expect("VIP"),
            )
        })
        .collect()
}

fn speaker_config(
    peer: PeerConfig,
    listen: Option<SocketAddr>,
    gr: Option<GrConfig>,
) -> SpeakerConfig {
    SpeakerConfig {
        asn: 65001,
        router_id: PeerLink::SPEAKER4,
        graceful_restart: gr,
        listen,
        connect_retry: Duration::from_secs(1),
        peers: vec![peer],
    }
}

fn peer(address: IpAddr, passive: bool) -> PeerConfig {
    PeerConfig {
        address,
        port: 179,
        asn: 65000,
        hold_time: 6,
        passive,
        md5_key: None,
        next_hop: None,
        next_hop_ipv6: None,
    }
}

/// BIRD's protocol `name`, with `channels` (`ipv4 {..};` lines), to the speaker at
/// `neighbor`; passive when the speaker connects.
fn bird_config(
    name: &str,
    local: IpAddr,
    neighbor: IpAddr,
    passive: bool,
    channels: &str,
) -> String {
    format!(
        "router id {};\n\
         protocol device {{ scan time 1; }}\n\
         protocol bgp {name} {{\n\
           local {local} as 65000;\n\
           neighbor {neighbor} as 65001;\n\
           passive {};\n\
           hold time 6;\n\
           connect retry time 1;\n\
           connect delay time 1;\n\
           error wait time 1, 2;\n\
           graceful restart on;\n\
           {channels}\n\
         }}\n",
        PeerLink::ROUTER4,
        if passive { "on" } else { "off" },
    )
}

const BOTH: &str = "ipv4 { import all; export none; };\n  ipv6 { import all; export none; };";

/// Polls `ok` every 100 ms while the speaker's tasks run, up to `limit`.
async fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn first_peer(speaker: &Speaker) -> PeerStatus {
    speaker.status().borrow()[0].clone()
}

/// Runs `test` on a current-thread runtime inside the speaker's namespace, so that every
/// socket the speaker opens is there.
fn in_speaker_ns(link: &PeerLink, test: impl std::future::Future<Output = ()>) {
    let _inside = link.speaker.enter().expect("enter the speaker's namespace");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(test);
}

#[test]
fn bird_imports_an_ipv6_vip_over_an_ipv4_session_with_our_next_hop_and_loses_it() {
    let link = PeerLink::new("b6a").expect("link");
    let bird = Bird::start(
        &link.router,
        &bird_config(
            "over4",
            PeerLink::router(false),
            PeerLink::SPEAKER4.into(),
            true,
            BOTH,
        ),
    )
    .expect("bird");
    in_speaker_ns(&link, async {
        let mut over4 = peer(PeerLink::router(false), false);
        over4.next_hop_ipv6 = Some(PeerLink::SPEAKER6);
        let mut speaker = Speaker::start(speaker_config(over4, None, None)).expect("speaker");
        speaker.set_routes(routes(&[VIP4, VIP6]));
        wait_until("BIRD has the IPv6 VIP", LIMIT, || {
            !bird.route(VIP6).is_empty()
        })
        .await;
        assert_eq!(
            ip_next_hops(&bird, VIP6).expect("birdc"),
            vec![IpAddr::from(PeerLink::SPEAKER6)],
            "{}",
            bird.route(VIP6)
        );
        assert_eq!(
            ip_next_hops(&bird, VIP4).expect("birdc"),
            vec![IpAddr::from(PeerLink::SPEAKER4)]
        );
        let status = first_peer(&speaker);
        assert_eq!(status.families, ["ipv4-unicast", "ipv6-unicast"]);
        assert_eq!(status.announced.len(), 2, "{status:?}");

        // The service behind the IPv6 VIP loses its backends: withdrawn, IPv4 stays.
        speaker.set_routes(routes(&[VIP4]));
        wait_until("BIRD loses the IPv6 VIP", LIMIT, || {
            bird.route(VIP6).is_empty()
        })
        .await;
        assert!(!bird.route(VIP4).is_empty(), "the IPv4 VIP stays");
        speaker.set_routes(routes(&[VIP4, VIP6]));
        wait_until("BIRD has the IPv6 VIP again", LIMIT, || {
            !bird.route(VIP6).is_empty()
        })
        .await;

        // Shutdown: both withdrawn before the Cease.
        speaker.shutdown().await;
        wait_until("BIRD's session to close", LIMIT, || {
            bird.log().contains("Received: Administrative shutdown")
        })
        .await;
        assert_eq!(bird.route(VIP6), "", "withdrawn by shutdown");
        assert_eq!(bird.route(VIP4), "");
    });
}

#[test]
fn a_peer_without_ipv6_unicast_gets_only_ipv4_and_the_status_says_why() {
    let link = PeerLink::new("b6f").expect("link");
    let ipv4_only = "ipv4 { import all; export none; };";
    let bird = Bird::start(
        &link.router,
        &bird_config(
            "v4only",
            PeerLink::router(false),
            PeerLink::SPEAKER4.into(),
            true,
            ipv4_only,
        ),
    )
    .expect("bird");
    in_speaker_ns(&link, async {
        let mut over4 = peer(PeerLink::router(false), false);
        over4.next_hop_ipv6 = Some(PeerLink::SPEAKER6);
        let mut speaker = Speaker::start(speaker_config(over4, None, None)).expect("speaker");
        speaker.set_routes(routes(&[VIP4, VIP6]));
        wait_until("BIRD has the IPv4 VIP", LIMIT, || {
            !bird.route(VIP4).is_empty()
        })
        .await;
        let status = first_peer(&speaker);
        assert_eq!(status.families, ["ipv4-unicast"]);
        assert_eq!(
            status.not_announced,
            vec![(
                VIP6.parse_prefix(),
                "the peer did not offer IPv6 unicast".to_owned()
            )]
        );
        assert_eq!(bird.route(VIP6), "");
        assert!(
            !bird.log().contains("Received:") && !bird.log().contains("Error"),
            "the session stays up without an error: {}",
            bird.log()
        );
        speaker.shutdown().await;
    });
}

/// `"10.0.0.1/32".parse_prefix()`, for comparing with the status.
trait ParsePrefix {
    fn parse_prefix(&self) -> fulcrum_bgp::Prefix;
}

impl ParsePrefix for str {
    fn parse_prefix(&self) -> fulcrum_bgp::Prefix {
        routes(&[self])[0].prefix
    }
}

/// Sets its flag when dropped.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn over_an_ipv6_session_bird_keeps_the_ipv6_vip_through_a_graceful_restart() {
    let link = PeerLink::new("b6r").expect("link");
    let ipv6_only = "ipv6 { import all; export none; };";
    let bird = Bird::start(
        &link.router,
        &bird_config(
            "over6",
            PeerLink::router(true),
            PeerLink::SPEAKER6.into(),
            false,
            ipv6_only,
        ),
    )
    .expect("bird");
    let protocol = || {
        bird.birdc(&["show", "protocols", "all", "over6"])
            .unwrap_or_default()
    };
    // BIRD connects to us: the listener on [::]:179 takes the IPv6 session.
    let listen = Some("[::]:179".parse().expect("address"));
    // Longer than the wait below: only our IPv6 End-of-RIB can end the restart in time.
    let gr = |restarted| GrConfig {
        restart_time: 90,
        restart_state: restarted,
        forwarding_state: restarted,
    };
    let missing = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        in_speaker_ns(&link, async {
            let config =
                speaker_config(peer(PeerLink::router(true), true), listen, Some(gr(false)));
            let mut speaker = Speaker::start(config.clone()).expect("speaker");
            speaker.set_routes(routes(&[VIP4, VIP6]));
            wait_until("BIRD has the IPv6 VIP", LIMIT, || {
                !bird.route(VIP6).is_empty()
            })
            .await;
            assert_eq!(
                ip_next_hops(&bird, VIP6).expect("birdc"),
                vec![IpAddr::from(PeerLink::SPEAKER6)],
                "the session's own address is the next hop"
            );
            let route = bird.route(VIP6);
            assert!(
                route.contains(&format!("BGP.next_hop: {} fe80:", PeerLink::SPEAKER6)),
                "the global next hop and our link-local one beside it: {route}"
            );
            let status = first_peer(&speaker);
            assert_eq!(status.families, ["ipv6-unicast"]);
            assert_eq!(
                status.not_announced,
                vec![(
                    VIP4.parse_prefix(),
                    "the peer did not offer IPv4 unicast".to_owned()
                )]
            );

            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    if bird.route(VIP6).is_empty() {
                        missing.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            let stop = SetOnDrop(&done);
            speaker.handover().await;
            wait_until(
                "BIRD to keep the routes for the restart time",
                LIMIT,
                || protocol().contains("Neighbor graceful restart active"),
            )
            .await;
            let mut next = Speaker::start(SpeakerConfig {
                graceful_restart: Some(gr(true)),
                ..config
            })
            .expect("the next speaker");
            next.set_routes(routes(&[VIP4, VIP6]));
            wait_until(
                "the new session's IPv6 End-of-RIB to end the restart",
                LIMIT,
                || {
                    let p = protocol();
                    p.contains("BGP state:          Established") && !p.contains("restart active")
                },
            )
            .await;
            let p = protocol();
            assert!(
                p.contains("Restart recovery") && p.contains("AF preserved: ipv4 ipv6"),
                "the next speaker opens with the R and F bits for IPv6: {p}"
            );
            drop(stop);
            assert!(
                !bird.route(VIP6).is_empty(),
                "the route is there at the end"
            );
            next.shutdown().await;
            wait_until("BIRD loses the IPv6 VIP on shutdown", LIMIT, || {
                bird.route(VIP6).is_empty()
            })
            .await;
        });
    });
    assert_eq!(
        missing.load(Ordering::Relaxed),
        0,
        "the route disappeared during the graceful restart"
    );
}
