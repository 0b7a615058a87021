//! ECMP over several balancers: a BIRD router learns the VIP from two `fulcrum run`
//! daemons over BGP and spreads the client's flows over them, every balancer carries a share, and the same flow lands on the
//! same backend whichever balancer it crosses.

use std::{collections::BTreeSet, net::SocketAddr, path::Path, time::Duration};

use fulcrum_lab::{
    ecmp::{EcmpLab, VIP, VIP_PREFIX, balancer_addr},
    fleet::{BgpTimers, Fleet, FleetConfig, api, metric, wait_for},
    traffic::{HttpConnection, udp_ask_from},
};

const FULCRUM: &str = env!("CARGO_BIN_EXE_fulcrum");
const CONNECTIONS: usize = 64;

/// Client ports of the UDP flows sent through one balancer, then the other.
const STEERED: std::ops::RangeInclusive<u16> = 40000..=40047;

#[test]
fn every_balancer_gets_flows_and_all_pick_the_same_backend() {
    let lab = EcmpLab::new("e", 2, 3, Some(3)).expect("lab");
    let _http = lab.http_servers().expect("HTTP servers");
    let _udp = lab.udp_servers().expect("UDP servers");
    let config = FleetConfig {
        balancers: 2,
        backends: vec![1, 2, 3],
        udp: true,
        bgp: Some(BgpTimers {
            hold_time: "3s".into(),
            graceful_restart: "4s".into(),
            shutdown_delay: "0s".into(),
        }),
        flow_sharing: None,
    };
    let mut fleet = Fleet::new(&lab, Path::new(FULCRUM), config).expect("fleet files");
    for n in 1..=2 {
        fleet.start(&lab, n).expect("start a balancer");
    }
    for n in 1..=2 {
        wait_for("six healthy backends", Duration::from_secs(30), || {
            api(&lab.balancer(n).ns, "GET", "/api/v1/services")
                .is_some_and(|(_, b)| b.matches("\"health\":\"up\"").count() == 6)
        })
        .unwrap_or_else(|e| panic!("balancer {n}: {e:#}\n{}", fleet.log(n)));
    }
    wait_for(
        "the router's two BGP paths",
        Duration::from_secs(30),
        || {
            lab.kernel_next_hops()
                .is_ok_and(|h| h == [balancer_addr(1), balancer_addr(2)])
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}: {}", lab.bird.route(VIP_PREFIX)));

    // Every balancer gets a share of the flows.
    let mut open: Vec<HttpConnection> = (0..CONNECTIONS)
        .map(|_| {
            HttpConnection::open(&lab.client.ns, SocketAddr::from((VIP, 80))).expect("connect")
        })
        .collect();
    for c in &mut open {
        c.get().expect("a request through the fleet");
    }
    // The daemons publish their counters every second or so.
    let mut flows = Vec::new();
    let counted = wait_for("every flow counted", Duration::from_secs(10), || {
        flows = (1..=2).map(|n| new_flows(&lab, n, "web")).collect();
        flows.iter().sum::<f64>() == CONNECTIONS as f64
    });
    assert!(
        counted.is_ok(),
        "each connection crossed exactly one balancer: {flows:?}"
    );
    for (i, f) in flows.iter().enumerate() {
        assert!(
            *f >= (CONNECTIONS / 8) as f64,
            "balancer {} got {f} of {CONNECTIONS} flows: {flows:?}",
            i + 1
        );
    }

    // The same 5-tuples through balancer 1, then through balancer 2 (which lists the
    // backends in the other order, and has no entry for these flows): same backends.
    let mut through = Vec::new();
    for n in 1..=2 {
        lab.steer(&format!("{}-{}", STEERED.start(), STEERED.end()), n)
            .expect("ip rule");
        let before = new_flows(&lab, n, "dns");
        let answers: Vec<String> = STEERED
            .map(|port| {
                udp_ask_from(&lab.client.ns, port, SocketAddr::from((VIP, 53)))
                    .unwrap_or_else(|e| panic!("UDP through balancer {n}: {e:#}"))
                    .server
            })
            .collect();
        let carried = wait_for("the steered flows counted", Duration::from_secs(10), || {
            new_flows(&lab, n, "dns") - before == STEERED.len() as f64
        });
        assert!(carried.is_ok(), "balancer {n} carried the steered flows");
        through.push(answers);
    }
    let used: BTreeSet<&String> = through[0].iter().collect();
    assert!(
        used.len() >= 2,
        "the flows spread over the backends: {used:?}"
    );
    assert_eq!(
        through[0], through[1],
        "a flow gets the same backend through either balancer"
    );
    drop(open);
}

/// Balancer `n`'s count of new flows of `service` (0 while it does not answer).
fn new_flows(lab: &EcmpLab, n: u8, service: &str) -> f64 {
    metric(
        &lab.balancer(n).ns,
        &format!("fulcrum_service_new_flows_total{{service=\"{service}\"}}"),
    )
    .unwrap_or(0.0)
}
