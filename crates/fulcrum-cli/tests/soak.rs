//! The soak test: sustained HTTP load through three services on the same backends, an
//! IPv4 and an IPv6 one in L2 DSR and an IPv4 one in IP-in-IP (wrk on keep-alive
//! connections, ab with a new connection per request, and a prober that reuses a small
//! pool of client ports, on each) while the daemon is reloaded, backends are drained,
//! undrained and flapped, and the daemon is restarted twice through the handover path and
//! once by SIGKILL. Every request must succeed and no connection may be reset.
//!
//! `SOAK_CYCLES` (default 1) repeats the 40-second script; `make soak` runs more.

mod common;
mod soak_support;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use common::{VIP6, six, wait_until, with_ipv6};
use fulcrum_lab::{
    dsr::{CLIENT, DsrLab, VIP, backend_addr},
    host::backend_servers,
    traffic::http_server,
};
use soak_support::{
    Daemon, Load, Prober, Restart, SoakDir, api_get, api_post, decapsulated, start_decap,
    tcp_counters,
};

/// Seconds of one cycle of the script.
const CYCLE: u64 = 40;

fn cycles() -> u64 {
    std::env::var("SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Backend `n`'s IPv6 address (`with_ipv6`).
fn backend6(n: u8) -> Ipv6Addr {
    six(10 + u16::from(n))
}

/// The IP-in-IP service's VIP, held by every backend beside [`VIP`].
const VIP_IPIP: Ipv4Addr = Ipv4Addr::new(10, 77, 99, 2);

/// The soaked services: name, VIP, forwarding, backend `n`'s address.
struct Soaked {
    family: &'static str,
    name: &'static str,
    vip: IpAddr,
    forwarding: &'static str,
    address: fn(u8) -> IpAddr,
}

const SERVICES: [Soaked; 3] = [
    Soaked {
        family: "IPv4",
        name: "web",
        vip: IpAddr::V4(VIP),
        forwarding: "l2-dsr",
        address: |n| backend_addr(n).into(),
    },
    Soaked {
        family: "IPv6",
        name: "web6",
        vip: IpAddr::V6(VIP6),
        forwarding: "l2-dsr",
        address: |n| backend6(n).into(),
    },
    // On-link backends behind `fulcrum decap`: the tunnel needs no router.
    Soaked {
        family: "IP-in-IP",
        name: "web-ipip",
        vip: IpAddr::V4(VIP_IPIP),
        forwarding: "ipip",
        address: |n| backend_addr(n).into(),
    },
];

/// Every soaked service on the same backends and weights.
fn config(dir: &SoakDir, backends: &[(u8, u32)]) -> String {
    let services: String = SERVICES
        .iter()
        .map(|s| {
            let list: String = backends
                .iter()
                .map(|(n, w)| {
                    format!("      - address: {}\n        weight: {w}\n", (s.address)(*n))
                })
                .collect();
            format!(
                "  - name: {}\n    vip: {}\n    port: 80\n    protocol: tcp\n    forwarding: {}\n    health:\n      - type: tcp\n        port: 8080\n        interval: 200ms\n        timeout: 150ms\n        rise: 2\n        fall: 2\n    backends:\n{list}",
                s.name, s.vip, s.forwarding
            )
        })
        .collect();
    format!(
        "instance: {instance}\ninterfaces: [eth0]\napi:\n  listen: 127.0.0.1:9180\n  token_file: {token}\nservices:\n{services}",
        instance = dir.instance,
        token = dir.token.display(),
    )
}

/// The health endpoint of a backend, on both families.
const HEALTH: &str = "[::]:8080";

#[test]
fn soak_under_load_with_reloads_drains_flaps_and_restarts() {
    let cycles = cycles();
    let lab = DsrLab::new("s", 4).expect("lab");
    with_ipv6(&lab);
    for b in &lab.backends {
        b.hold_vip(VIP_IPIP).expect("VIP on lo");
    }
    // The tunnelled service's health probes go to its VIP, leaving by the balancer's route
    // to it (any next hop on the segment: the probe program sends them to the backend).
    lab.balancer
        .ns
        .ip(&[
            "route",
            "add",
            &format!("{VIP_IPIP}/32"),
            "via",
            &CLIENT.to_string(),
        ])
        .expect("route to the IP-in-IP VIP");
    // One listener per backend on [::]:80 takes both families.
    let _servers = backend_servers(&lab.backends, "[::]:80".parse().unwrap(), http_server)
        .expect("HTTP servers");
    let mut health: Vec<_> = lab
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            Some(
                http_server(&b.ns, &format!("health-{}", i + 1), HEALTH.parse().unwrap())
                    .expect("health server"),
            )
        })
        .collect();
    lab.client
        .ns
        .sysctl("net.ipv4.tcp_tw_reuse", "1")
        .expect("sysctl");
    let dir = SoakDir::new();
    let decaps = start_decap(&lab, &dir);
    let three = [(1, 1), (2, 1), (3, 1)];
    dir.write_config(&config(&dir, &three));

    let mut daemon = Daemon::start(&lab, &dir);
    wait_until(
        "three healthy backends in each service",
        Duration::from_secs(20),
        || {
            api_get(&lab, "/api/v1/services")
                .matches("\"health\":\"up\"")
                .count()
                == 3 * SERVICES.len()
        },
    );

    let before = tcp_counters(&lab.client.ns);
    let duration = Duration::from_secs(CYCLE * cycles + 2);
    // Load and a prober (its own 32 ports) per service.
    let running: Vec<_> = SERVICES
        .iter()
        .zip((20000u16..).step_by(32))
        .map(|(s, ports)| {
            let vip = SocketAddr::new(s.vip, 80);
            (
                Load::start(&lab, vip, duration),
                Prober::start(&lab, vip, ports, duration),
            )
        })
        .collect();
    let start = Instant::now();
    let at = |secs: u64| {
        let when = start + Duration::from_secs(secs);
        if let Some(wait) = when.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    };
    let mut restarts = Vec::new();
    let four_with = |w: u32| [(1, 1), (2, 1), (3, w), (4, 1)];
    let backend_1 = |action: &str| {
        for s in &SERVICES {
            let path = format!(
                "/api/v1/services/{}/backends/{}/{action}",
                s.name,
                (s.address)(1)
            );
            api_post(&lab, &path);
        }
    };
    for cycle in 0..cycles {
        let t = cycle * CYCLE;
        at(t + 2);
        dir.write_config(&config(&dir, &four_with(1 + cycle as u32 % 2)));
        api_post(&lab, "/api/v1/reload");
        at(t + 5);
        backend_1("drain");
        at(t + 8);
        backend_1("undrain");
        at(t + 11);
        health[1] = None; // backend-2's health endpoint goes away: it flaps down
        at(t + 14);
        health[1] = Some(
            http_server(&lab.backends[1].ns, "health-2", HEALTH.parse().unwrap())
                .expect("health server"),
        );
        at(t + 17);
        restarts.push(daemon.restart(&lab, &dir, Restart::Handover));
        at(t + 23);
        dir.write_config(&config(&dir, &four_with(3)));
        api_post(&lab, "/api/v1/reload");
        at(t + 26);
        restarts.push(daemon.restart(&lab, &dir, Restart::Handover));
        at(t + 32);
        restarts.push(daemon.restart(&lab, &dir, Restart::Kill));
    }
    let (loads, probes): (Vec<_>, Vec<_>) = running
        .into_iter()
        .zip(&SERVICES)
        .map(|((load, prober), s)| ((s.family, load.finish()), (s.family, prober.finish())))
        .unzip();
    // The data plane's own account (counters survive restarts: they are pinned).
    let metrics = api_get(&lab, "/metrics");
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("fulcrum_packet_reasons_total") && !l.ends_with(" 0"))
    {
        println!("data plane: {line}");
    }
    // Each service's load went through the balancer.
    for s in &SERVICES {
        let label = format!("fulcrum_service_packets_total{{service=\"{}\"}} ", s.name);
        let packets = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&label)?.parse::<f64>().ok())
            .unwrap_or(0.0);
        println!("data plane: {packets} packets forwarded for {}", s.name);
        assert!(packets > 0.0, "nothing forwarded for {}", s.name);
    }
    let after = tcp_counters(&lab.client.ns);
    // The IP-in-IP service's packets arrived tunnelled (counted by the stopped
    // decapsulators).
    drop(decaps);
    let tunnelled: Vec<u64> = (0..lab.backends.len())
        .map(|i| decapsulated(&dir, i))
        .collect();
    println!("decapsulated per backend: {tunnelled:?}");
    assert!(
        tunnelled.iter().all(|n| *n > 0),
        "every backend got IP-in-IP: {tunnelled:?}"
    );

    println!("soak: {cycles} cycle(s) of {CYCLE} s");
    for (family, load) in &loads {
        println!(
            "{family} wrk (keep-alive): {} requests, {} socket errors, {} non-2xx",
            load.wrk_requests, load.wrk_errors, load.wrk_non_2xx
        );
        println!(
            "{family} ab (new connection each): {} requests, {} failed",
            load.ab_complete, load.ab_failed
        );
    }
    for (family, probes) in &probes {
        println!(
            "{family} prober (reused ports): {} requests, {} failed, longest gap {:?}",
            probes.answered,
            probes.failures.len(),
            probes.longest_gap(start, start + duration)
        );
    }
    for r in &restarts {
        let gaps: Vec<_> = probes
            .iter()
            .map(|(family, p)| {
                let gap = p.longest_gap(
                    r.at - Duration::from_secs(1),
                    r.at + r.back_after + Duration::from_secs(2),
                );
                format!("{family} {gap:?}")
            })
            .collect();
        println!(
            "{:?} at {:?}: daemon back after {:?}, longest gap between answers {}",
            r.kind,
            r.at.duration_since(start),
            r.back_after,
            gaps.join(", ")
        );
    }
    let resets = after.resets_received_since(&before);
    println!(
        "client TCP: {resets} connections reset by the far end, {} closed by the client with a reset, {} attempts failed",
        after.own_aborts - before.own_aborts,
        after.attempt_fails - before.attempt_fails
    );

    for (family, load) in &loads {
        assert!(
            load.wrk_requests > 0 && load.ab_complete > 0,
            "{family}: no load"
        );
        assert_eq!(load.wrk_errors, 0, "{family}: wrk saw socket errors");
        assert_eq!(load.wrk_non_2xx, 0, "{family}: wrk saw failed answers");
        assert_eq!(load.ab_failed, 0, "{family}: ab saw failed requests");
    }
    for (family, probes) in &probes {
        assert!(probes.answered > 0, "{family}: no probe answered");
        assert!(
            probes.failures.is_empty(),
            "{family} prober failures: {:?}",
            probes.failures
        );
    }
    assert_eq!(
        after.attempt_fails - before.attempt_fails,
        0,
        "connection attempts were refused or reset"
    );
    assert_eq!(resets, 0, "established connections were reset");
    assert!(
        daemon.log().contains("adopting pinned state"),
        "the restarted daemon adopted the pinned state"
    );
    drop(daemon);
    assert!(
        !lab.balancer_has_xdp().expect("ip link"),
        "SIGTERM detaches"
    );
    assert!(!dir.pin_dir().exists(), "SIGTERM removes the pinned state");
}
