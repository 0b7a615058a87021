//! Top talkers in the DSR lab: a flood of spoofed ACKs from one /24 (and a trickle from
//! another) shows up at the top of `GET /api/v1/top-talkers` and in `/metrics` within
//! a few seconds.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use common::{
    API, FULCRUM, api, assert_promtool_accepts, config_file, start_daemon, temp_dir, wait_for_up,
    web_service,
};
use fulcrum_lab::{
    dsr::{DsrLab, VIP, backend_addr},
    frame::FrameBuilder,
    netns::NetNs,
};
use serde_json::Value;

const FLOOD: [u8; 3] = [10, 200, 5];
const TRICKLE: [u8; 3] = [10, 201, 7];

fn config(dir: &Path) -> String {
    let backends: Vec<String> = [1, 2]
        .iter()
        .map(|n| backend_addr(*n).to_string())
        .collect();
    config_file(dir, &web_service(&VIP.to_string(), "", &backends))
        + "top_talkers:\n  ipv4_prefixes: [24, 20]\n  top: 3\n  sample: 4\n"
}

/// Sends spoofed ACKs to VIP:80 from the client's namespace through a raw socket until
/// `stop`: nine from hosts of [`FLOOD`]/24 for every one from [`TRICKLE`]/24, each from a
/// new port (a new flow to the balancer).
fn flood(client: &NetNs, stop: &AtomicBool) {
    client
        .run_in(|| {
            // SAFETY: a plain socket, closed below.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            // SAFETY: zeroed sockaddr_in is valid; fields set below.
            let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            to.sin_family = libc::AF_INET as u16;
            to.sin_addr.s_addr = u32::from_ne_bytes(VIP.octets());
            let mut n: u32 = 0;
            while !stop.load(Ordering::Relaxed) {
                n = n.wrapping_add(1);
                let net = if n.is_multiple_of(10) { TRICKLE } else { FLOOD };
                let src = Ipv4Addr::new(net[0], net[1], net[2], (n % 250) as u8 + 1);
                let port = 1024 + (n % 60000) as u16;
                let frame =
                    FrameBuilder::tcp(SocketAddrV4::new(src, port), SocketAddrV4::new(VIP, 80))
                        .build();
                let ip = &frame[14..];
                // SAFETY: `ip` is valid for its length, `to` a sockaddr_in.
                let sent = unsafe {
                    libc::sendto(
                        fd,
                        ip.as_ptr().cast(),
                        ip.len(),
                        0,
                        (&raw const to).cast(),
                        size_of::<libc::sockaddr_in>() as u32,
                    )
                };
                if sent < 0 {
                    // A full queue: let it drain.
                    std::thread::sleep(Duration::from_millis(1));
                }
                if n.is_multiple_of(2000) {
                    // A few hundred thousand packets per second at most: a flood, not a
                    // machine-wide stall.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            // SAFETY: ours.
            unsafe { libc::close(fd) };
        })
        .expect("enter the client namespace");
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The web service's talkers of one prefix length, busiest first.
fn talkers(v: &Value, len: &str) -> Vec<(String, f64, f64)> {
    let Some(services) = v["services"].as_array() else {
        return Vec::new();
    };
    services
        .iter()
        .filter(|s| s["service"] == "web")
        .flat_map(|s| s["talkers"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["prefix"].as_str().is_some_and(|p| p.ends_with(len)))
        .map(|t| {
            (
                t["prefix"].as_str().unwrap_or_default().to_string(),
                t["packets_per_second"].as_f64().unwrap_or_default(),
                t["new_flows_per_second"].as_f64().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn a_flood_from_one_prefix_tops_the_api_within_seconds() {
    let lab = DsrLab::new("tt", 2).expect("lab");
    let _servers = lab.http_servers().expect("HTTP servers");
    let dir = temp_dir("talkers");
    let config_path = dir.join("fulcrum.yaml");
    std::fs::write(&config_path, config(&dir)).expect("config");
    let _daemon = start_daemon(&lab, &config_path);
    wait_for_up(&lab, 2, Duration::from_secs(15));

    let (_, before) = api(&lab.balancer.ns, "GET", "/api/v1/top-talkers", None);
    let before: Value = serde_json::from_str(&before).expect("JSON");
    assert_eq!(before["sample"], 4);
    assert!(
        talkers(&before, "/24").is_empty(),
        "no traffic yet: {before}"
    );

    let stop = AtomicBool::new(false);
    let (seen, metrics, status) = std::thread::scope(|scope| {
        scope.spawn(|| flood(&lab.client.ns, &stop));
        // Stops the sender even if a call below panics.
        let _stop = StopOnDrop(&stop);
        let mut seen = None;
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(200));
            let (_, body) = api(&lab.balancer.ns, "GET", "/api/v1/top-talkers", None);
            let v: Value = serde_json::from_str(&body).expect("JSON");
            if talkers(&v, "/24").len() == 2 {
                seen = Some(v);
                break;
            }
        }
        let status = lab
            .balancer
            .ns
            .exec(FULCRUM, &["status", "--api", &format!("http://{API}")])
            .expect("fulcrum status");
        (
            seen,
            api(&lab.balancer.ns, "GET", "/metrics", None).1,
            status,
        )
    });
    let v = seen.expect("both prefixes reported within 10 s of the flood");

    let v24 = talkers(&v, "/24");
    assert_eq!(v24[0].0, "10.200.5.0/24", "the flood on top: {v24:?}");
    assert_eq!(v24[1].0, "10.201.7.0/24", "{v24:?}");
    assert!(v24[0].1 > 3.0 * v24[1].1, "nine to one: {v24:?}");
    assert!(v24[0].2 > 0.0, "each packet a new flow: {v24:?}");
    let v20 = talkers(&v, "/20");
    let names: Vec<&str> = v20.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(names, ["10.200.0.0/20", "10.201.0.0/20"], "{v20:?}");

    assert!(
        metrics.contains(
            "fulcrum_top_talker_packets_per_second{service=\"web\",prefix=\"10.200.5.0/24\"}"
        ),
        "{metrics}"
    );
    let series = metrics
        .lines()
        .filter(|l| l.starts_with("fulcrum_top_talker_packets_per_second{"))
        .count();
    assert!(series <= 3 * 3, "at most top × lengths series: {series}");
    assert_promtool_accepts(&metrics);

    // `fulcrum status` ends with the busiest prefixes, the flood's first.
    let section = status
        .split_once("\ntop talkers (1 in 4 packets sampled")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("a top talkers section: {status}"));
    let rows: Vec<&str> = section.lines().skip(1).map(str::trim).collect();
    assert_eq!(rows.first(), Some(&"web"), "{status}");
    let first24 = rows.iter().find(|r| {
        r.split_whitespace()
            .next()
            .is_some_and(|p| p.ends_with("/24"))
    });
    assert!(
        first24.is_some_and(|r| r.starts_with("10.200.5.0/24 ")),
        "the flood's /24 first of the /24s: {status}"
    );
}
