//! What the stand-in daemon answers: a fixed status made of the daemon's own types.

use std::net::{IpAddr, Ipv4Addr};

use fulcrum_daemon::{
    api::{Event, Snapshot},
    status::{BackendStatus, CheckStatus, Health, ServiceStatus, Status, TrafficStatus},
};

/// An unbreakable 150-character word in a last error: it must wrap, not widen a phone's page.
pub const LONG_URL: &str = "http://10.66.0.12:80/healthz/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Why the last reload was refused, as the API reports it.
pub const RELOAD_ERROR: &str =
    "/etc/fulcrum/fulcrum.yaml:9: services[0].port: 70000 is not a port (0 to 65535)";

/// The IPv6 service's VIP and its one backend, tunnelled with GUE.
const V6_VIP: &str = "2001:db8:100::1";
pub const V6_BACKEND: &str = "2001:db8:200::10";

/// Markup in a message from the API, which the page must show as text.
pub const HOSTILE: &str = "<img src=x onerror=\"document.title='pwned'\"> reloaded by <b>ops</b>";

/// Why a backend is left out of the data plane, as the daemon reports it.
pub const UNREACHABLE: &str = "backend 10.66.0.21 is reached through gateway 10.66.0.1";

fn traffic(pps: f64, new_flows: u64) -> TrafficStatus {
    TrafficStatus {
        packets: 1_000_000,
        bytes: 800_000_000,
        new_flows,
        packets_per_second: pps,
        bits_per_second: pps * 8.0 * 800.0,
    }
}

fn backend(
    address: [u8; 4],
    health: Health,
    drained: bool,
    last_error: Option<&str>,
) -> BackendStatus {
    let up = health == Health::Up;
    BackendStatus {
        address: IpAddr::from(address),
        weight: if address[3] == 13 { 2 } else { 1 },
        drained,
        health,
        last_error: last_error.map(str::to_string),
        checks: match health {
            Health::Unknown => Vec::new(),
            _ => vec![CheckStatus {
                kind: "http".into(),
                up,
                latency_seconds: Some(if up { 0.0021 } else { 0.5 }),
                last_error: last_error.map(str::to_string),
            }],
        },
        traffic: traffic(if up { 1234.0 } else { 0.0 }, 4321),
        data_plane_error: None,
        leaving: false,
    }
}

/// What `GET /api/v1/services` answers, made of the daemon's own types. The `generation` (1
/// for the first answer) moves the web service's rate so a refresh shows.
/// The stand-in daemon's answer; `all_up`: every backend up and none drained.
pub fn fixture(generation: usize, reload_refused: bool, all_up: bool) -> String {
    let backend = |address: [u8; 4], health: Health, drained: bool, error: Option<&str>| {
        if all_up {
            backend(address, Health::Up, false, None)
        } else {
            backend(address, health, drained, error)
        }
    };
    let mut status = Status {
        services: vec![
            ServiceStatus {
                name: "web".into(),
                vip: Ipv4Addr::new(10, 66, 99, 1).into(),
                port: 80,
                protocol: "tcp".into(),
                forwarding: "l2-dsr".into(),
                icmp_echo: true,
                traffic: traffic(1000.0 * generation as f64, 98_765),
                backends: vec![
                    backend([10, 66, 0, 11], Health::Up, false, None),
                    backend(
                        [10, 66, 0, 12],
                        Health::Down,
                        false,
                        Some(&format!("connect refused: GET {LONG_URL}")),
                    ),
                    backend([10, 66, 0, 13], Health::Unknown, false, None),
                ],
            },
            ServiceStatus {
                name: "dns".into(),
                vip: Ipv4Addr::new(10, 66, 99, 2).into(),
                port: 53,
                protocol: "udp".into(),
                forwarding: "l2-dsr".into(),
                icmp_echo: true,
                traffic: traffic(0.0, 0),
                backends: vec![
                    backend([10, 66, 0, 21], Health::Up, false, None),
                    backend([10, 66, 0, 22], Health::Up, true, None),
                ],
            },
            ServiceStatus {
                name: "web6".into(),
                vip: V6_VIP.parse().expect("vip"),
                port: 443,
                protocol: "tcp".into(),
                forwarding: "gue".into(),
                icmp_echo: false,
                traffic: traffic(0.0, 0),
                backends: vec![BackendStatus {
                    address: V6_BACKEND.parse().expect("address"),
                    ..backend([0, 0, 0, 0], Health::Up, false, None)
                }],
            },
        ],
        counters: vec![("tx".into(), 123_456), ("pass_not_vip".into(), 7)],
        reloading: false,
        health_local_failures: 0,
    };
    if !all_up {
        let dns = &mut status.services[1].backends;
        dns[0].data_plane_error = Some(UNREACHABLE.into());
        dns[1].leaving = true;
    }
    let event = |time: &str, service: &str, backend: Option<[u8; 4]>, message: &str| Event {
        time: time.into(),
        service: service.into(),
        backend: backend.map(IpAddr::from),
        message: message.into(),
    };
    let snapshot = Snapshot {
        status,
        events: vec![
            event(
                "2026-01-02T03:04:05Z",
                "web",
                Some([10, 66, 0, 12]),
                "became unhealthy: connect refused",
            ),
            event(
                "2026-01-02T03:00:00Z",
                "dns",
                Some([10, 66, 0, 22]),
                "drained",
            ),
            event("2026-01-02T02:59:00Z", "web", None, HOSTILE),
        ],
        reload_error: reload_refused.then(|| RELOAD_ERROR.to_string()),
        config: None,
    };
    serde_json::to_string(&snapshot).expect("snapshot serializes")
}

/// `GET /api/v1/top-talkers`: a flood from one /24 of web's, a hostile service name.
pub const TOP_TALKERS: &str = r#"{"sample":16,"top":10,"ipv4_prefixes":[24,20],"ipv6_prefixes":[48],
"services":[{"service":"web","talkers":[
{"prefix":"10.200.0.0/20","packets_per_second":250000.0,"new_flows_per_second":240000.0},
{"prefix":"10.200.5.0/24","packets_per_second":248000.0,"new_flows_per_second":239000.0},
{"prefix":"10.1.2.0/24","packets_per_second":120.0,"new_flows_per_second":3.0}]},
{"service":"<img src=x onerror=alert(1)>","talkers":[
{"prefix":"2001:db8:11::/48","packets_per_second":16.0,"new_flows_per_second":0.0}]}]}"#;
