//! The soak test: sustained HTTP load through the VIP (wrk on keep-alive connections, ab
//! with a new connection per request, and a prober that reuses a small pool of client
//! ports) while the daemon is reloaded, backends are drained, undrained and flapped, and
//! the daemon is restarted twice through the handover path and once by SIGKILL. Every
//! request must succeed and no connection may be reset.
//!
//! `SOAK_CYCLES` (default 1) repeats the 40-second script; `make soak` runs more.

mod common;
mod soak_support;

use std::time::{Duration, Instant};

use common::wait_until;
use fulcrum_lab::{
    dsr::{DsrLab, VIP, backend_addr},
    traffic::http_server,
};
use soak_support::{Daemon, Load, Prober, Restart, SoakDir, api_get, api_post, tcp_counters};

/// Seconds of one cycle of the script.
const CYCLE: u64 = 40;

fn cycles() -> u64 {
    std::env::var("SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

fn config(dir: &SoakDir, backends: &[(u8, u32)]) -> String {
    let list: String = backends
        .iter()
        .map(|(n, w)| {
            format!(
                "      - address: {}\n        weight: {w}\n",
                backend_addr(*n)
            )
        })
        .collect();
    format!(
        "instance: {instance}\ninterfaces: [eth0]\napi:\n  listen: 127.0.0.1:9180\n  token_file: {token}\nservices:\n  - name: web\n    vip: {VIP}\n    port: 80\n    protocol: tcp\n    health:\n      - type: tcp\n        port: 8080\n        interval: 200ms\n        timeout: 150ms\n        rise: 2\n        fall: 2\n    backends:\n{list}",
        instance = dir.instance,
        token = dir.token.display(),
    )
}

#[test]
fn soak_under_load_with_reloads_drains_flaps_and_restarts() {
    let cycles = cycles();
    let lab = DsrLab::new("s", 4).expect("lab");
    let _servers = lab.http_servers().expect("HTTP servers");
    let mut health: Vec<_> = lab
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            Some(
                http_server(
                    &b.ns,
                    &format!("health-{}", i + 1),
                    "0.0.0.0:8080".parse().unwrap(),
                )
                .expect("health server"),
            )
        })
        .collect();
    lab.client
        .ns
        .sysctl("net.ipv4.tcp_tw_reuse", "1")
        .expect("sysctl");
    let dir = SoakDir::new();
    let three = [(1, 1), (2, 1), (3, 1)];
    dir.write_config(&config(&dir, &three));

    let mut daemon = Daemon::start(&lab, &dir);
    wait_until("three healthy backends", Duration::from_secs(20), || {
        api_get(&lab, "/api/v1/services")
            .matches("\"health\":\"up\"")
            .count()
            == 3
    });

    let before = tcp_counters(&lab.client.ns);
    let duration = Duration::from_secs(CYCLE * cycles + 2);
    let load = Load::start(&lab, duration);
    let prober = Prober::start(&lab, duration);
    let start = Instant::now();
    let at = |secs: u64| {
        let when = start + Duration::from_secs(secs);
        if let Some(wait) = when.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    };
    let mut restarts = Vec::new();
    let four_with = |w: u32| [(1, 1), (2, 1), (3, w), (4, 1)];
    for cycle in 0..cycles {
        let t = cycle * CYCLE;
        at(t + 2);
        dir.write_config(&config(&dir, &four_with(1 + cycle as u32 % 2)));
        api_post(&lab, "/api/v1/reload");
        at(t + 5);
        api_post(&lab, "/api/v1/services/web/backends/10.77.0.11/drain");
        at(t + 8);
        api_post(&lab, "/api/v1/services/web/backends/10.77.0.11/undrain");
        at(t + 11);
        health[1] = None; // backend-2's health endpoint goes away: it flaps down
        at(t + 14);
        health[1] = Some(
            http_server(
                &lab.backends[1].ns,
                "health-2",
                "0.0.0.0:8080".parse().unwrap(),
            )
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
    let load = load.finish();
    // The data plane's own account (counters survive restarts: they are pinned).
    let metrics = api_get(&lab, "/metrics");
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("fulcrum_packet_reasons_total") && !l.ends_with(" 0"))
    {
        println!("data plane: {line}");
    }
    let probes = prober.finish();
    let after = tcp_counters(&lab.client.ns);

    println!("soak: {cycles} cycle(s) of {CYCLE} s");
    println!(
        "wrk (keep-alive): {} requests, {} socket errors, {} non-2xx",
        load.wrk_requests, load.wrk_errors, load.wrk_non_2xx
    );
    println!(
        "ab (new connection each): {} requests, {} failed",
        load.ab_complete, load.ab_failed
    );
    println!(
        "prober (reused ports): {} requests, {} failed, longest gap {:?}",
        probes.answered,
        probes.failures.len(),
        probes.longest_gap(start, start + duration)
    );
    for r in &restarts {
        println!(
            "{:?} at {:?}: daemon back after {:?}, longest gap between answers {:?}",
            r.kind,
            r.at.duration_since(start),
            r.back_after,
            probes.longest_gap(
                r.at - Duration::from_secs(1),
                r.at + r.back_after + Duration::from_secs(2)
            )
        );
    }
    let resets = after.resets_received_since(&before);
    println!(
        "client TCP: {resets} connections reset by the far end, {} closed by the client with a reset, {} attempts failed",
        after.own_aborts - before.own_aborts,
        after.attempt_fails - before.attempt_fails
    );

    assert!(load.wrk_requests > 0 && load.ab_complete > 0 && probes.answered > 0);
    assert_eq!(load.wrk_errors, 0, "wrk saw socket errors");
    assert_eq!(load.wrk_non_2xx, 0, "wrk saw failed answers");
    assert_eq!(load.ab_failed, 0, "ab saw failed requests");
    assert!(
        probes.failures.is_empty(),
        "prober failures: {:?}",
        probes.failures
    );
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
