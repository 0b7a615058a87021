//! Route health injection of an IPv6 VIP by `fulcrum run`, configured as the README's BGP
//! IPv6 section shows: BIRD in the dual-stack DSR lab's client namespace peers with the
//! daemon over an IPv4 and an IPv6 session, and the test reads what an operator reads,
//! `birdc show route` for the /128 and the /32 beside it.

mod common;

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use common::{
    VIP6, config_file, six, start_daemon, temp_dir, try_api, wait_for_up, wait_until, web_service,
    with_ipv6,
};
use fulcrum_lab::{
    bgp_peers::Bird,
    dsr::{BALANCER, CLIENT, DsrLab, VIP, backend_addr},
    traffic::{Server, http_get, http_server},
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);
/// BIRD's protocols: the IPv4 session and the IPv6 one.
const OVER4: &str = "fulcrum4";
const OVER6: &str = "fulcrum6";

/// BIRD (AS 65000) with the README's router side: one protocol per session, each with an
/// `ipv4` channel and an `ipv6` one that takes only /128s of the VIPs' range.
fn bird_config() -> String {
    let session = |name: &str, local: &str, neighbor: &str| {
        format!(
            "protocol bgp {name} {{\n\
               local {local} as 65000;\n\
               neighbor {neighbor} as 65001;\n\
               hold time 6;\n\
               connect retry time 1;\n\
               connect delay time 1;\n\
               error wait time 1, 2;\n\
               graceful restart on;\n\
               ipv4 {{ import all; export none; }};\n\
               ipv6 {{ import filter {{ if net ~ [ 2001:db8:77:99::/64{{128,128}} ] then accept; \
             reject; }}; export none; }};\n\
             }}\n"
        )
    };
    format!(
        "router id {CLIENT};\nprotocol device {{ }}\n{}{}",
        session(OVER4, &CLIENT.to_string(), &BALANCER.to_string()),
        session(OVER6, &six(1).to_string(), &six(2).to_string()),
    )
}

/// The README's `bgp:` example for this lab: `next_hop_ipv6` for the IPv4 session's IPv6
/// VIPs, the peer's `next_hop` for the IPv6 session's IPv4 VIPs, `listen` left to default.
fn bgp_section() -> String {
    format!(
        "bgp:\n  asn: 65001\n  router_id: {BALANCER}\n  next_hop_ipv6: {}\n  \
         graceful_restart: 3s\n  shutdown_delay: 1s\n  peers:\n    \
         - address: {CLIENT}\n      asn: 65000\n      hold_time: 6s\n    \
         - address: {}\n      asn: 65000\n      hold_time: 6s\n      next_hop: {BALANCER}\n",
        six(2),
        six(1),
    )
}

/// HTTP servers for the IPv6 service only: on each backend's IPv6 address (its checks) and
/// on the VIP (its traffic), so that stopping them leaves the IPv4 ones on 0.0.0.0:80.
fn servers6(lab: &DsrLab) -> Vec<Server> {
    let mut servers = Vec::new();
    for (i, backend) in lab.backends.iter().enumerate() {
        let name = format!("backend-{}", i + 1);
        for addr in [six(11 + i as u16), VIP6] {
            let addr = SocketAddr::from((addr, 80));
            // The VIP on `lo` is tentative (not bindable) until the kernel's DAD work runs.
            let mut server = None;
            wait_until(&format!("binding {addr}"), LIMIT, || {
                server = http_server(&backend.ns, &name, addr).ok();
                server.is_some()
            });
            servers.extend(server);
        }
    }
    servers
}

/// `birdc show route PREFIX protocol PROTO all`; empty while that protocol has no route
/// for it.
fn route(bird: &Bird, proto: &str, prefix: &str) -> String {
    match bird.birdc(&["show", "route", prefix, "protocol", proto, "all"]) {
        Ok(text) if text.contains(prefix) => text,
        _ => String::new(),
    }
}

/// The `BGP.next_hop:` attribute of a route BIRD shows (the addresses after it).
fn bgp_next_hop(route: &str) -> Option<&str> {
    route
        .lines()
        .find_map(|l| l.trim().strip_prefix("BGP.next_hop: "))
}

/// Both protocols have `prefix`.
fn both_have(bird: &Bird, prefix: &str) -> bool {
    [OVER4, OVER6]
        .iter()
        .all(|p| !route(bird, p, prefix).is_empty())
}

/// Neither protocol has `prefix`.
fn none_has(bird: &Bird, prefix: &str) -> bool {
    [OVER4, OVER6]
        .iter()
        .all(|p| route(bird, p, prefix).is_empty())
}

/// The balancer's link-local address on its lab interface.
fn link_local(lab: &DsrLab) -> String {
    let out = (lab.balancer.ns)
        .ip(&["-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"])
        .expect("ip addr");
    let words: Vec<&str> = out.split_whitespace().collect();
    let addr = words.windows(2).find(|w| w[0] == "inet6").map(|w| w[1]);
    let addr = addr.and_then(|a| a.split('/').next());
    addr.unwrap_or_else(|| panic!("no link-local address in {out}"))
        .to_owned()
}

fn strings(v: &Value) -> BTreeSet<String> {
    (v.as_array().into_iter().flatten())
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn bird_has_the_ipv6_vip_over_both_sessions_while_its_backends_are_healthy() {
    let lab = DsrLab::new("bgpv6", 2).expect("lab");
    with_ipv6(&lab);
    let servers4 = lab.http_servers().expect("IPv4 HTTP servers");
    let servers = servers6(&lab);
    let bird = Bird::start(&lab.client.ns, &bird_config()).expect("bird");
    let dir = temp_dir("bgp-ipv6-vip");
    let backends6 = [six(11).to_string(), six(12).to_string()];
    let backends4 = [backend_addr(1).to_string(), backend_addr(2).to_string()];
    let services = web_service(&VIP6.to_string(), "", &backends6)
        .replace("  - name: web\n", "  - name: web6\n")
        + &web_service(&VIP.to_string(), "", &backends4);
    let path = dir.join("fulcrum.yaml");
    std::fs::write(&path, config_file(&dir, &services) + &bgp_section()).expect("config");
    let mut daemon = start_daemon(&lab, &path);
    let (prefix6, prefix4) = (format!("{VIP6}/128"), format!("{VIP}/32"));

    wait_until("BIRD has both VIPs over both sessions", LIMIT, || {
        both_have(&bird, &prefix6) && both_have(&bird, &prefix4)
    });
    let hop6 = six(2).to_string();
    let over4 = route(&bird, OVER4, &prefix6);
    assert!(over4.contains(&format!("via {hop6} on eth0")), "{over4}");
    assert_eq!(
        bgp_next_hop(&over4),
        Some(hop6.as_str()),
        "bgp.next_hop_ipv6 over the IPv4 session, alone: {over4}"
    );
    let over6 = route(&bird, OVER6, &prefix6);
    assert!(over6.contains(&format!("via {hop6} on eth0")), "{over6}");
    assert_eq!(
        bgp_next_hop(&over6),
        Some(format!("{hop6} {}", link_local(&lab)).as_str()),
        "over the IPv6 session, our link-local address beside the global one: {over6}"
    );
    for proto in [OVER4, OVER6] {
        let r = route(&bird, proto, &prefix4);
        assert!(r.contains(&format!("via {BALANCER} on eth0")), "{r}");
        assert!(r.contains("BGP.as_path: 65001"), "{r}");
    }
    // The IPv6 VIP is served, not only announced. Once every backend is up: a SYN
    // retransmitted after a backend joins is balanced afresh and may reach another one.
    wait_for_up(&lab, 4, LIMIT);
    let answer = http_get(&lab.client.ns, SocketAddr::from((VIP6, 80))).expect("IPv6 request");
    assert!(answer.server.starts_with("backend-"), "{answer:?}");

    let (_, body) = try_api(&lab.balancer.ns, "GET", "/api/v1/bgp", None).expect("API");
    let status: Value = serde_json::from_str(&body).expect("JSON");
    let peers = status["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 2, "{body}");
    for peer in peers {
        assert_eq!(peer["state"], "Established", "{body}");
        assert_eq!(
            strings(&peer["families"]),
            BTreeSet::from(["ipv4-unicast".into(), "ipv6-unicast".into()]),
            "{body}"
        );
        assert_eq!(
            strings(&peer["announced"]),
            BTreeSet::from([prefix4.clone(), prefix6.clone()]),
            "{body}"
        );
        assert_eq!(peer["not_announced"], Value::Array(Vec::new()), "{body}");
    }

    // The IPv6 service's backends all fail: its /128 goes from both sessions, the IPv4 VIP
    // stays and is served; they recover: it comes back.
    drop(servers);
    wait_until("BIRD loses the IPv6 VIP", LIMIT, || {
        none_has(&bird, &prefix6)
    });
    assert!(
        both_have(&bird, &prefix4),
        "the IPv4 VIP stays announced: {}",
        bird.route(&prefix4)
    );
    let four = http_get(&lab.client.ns, SocketAddr::from((VIP, 80))).expect("IPv4 request");
    assert!(four.server.starts_with("backend-"), "{four:?}");
    let servers = servers6(&lab);
    wait_until("BIRD has the IPv6 VIP again", LIMIT, || {
        both_have(&bird, &prefix6)
    });
    assert!(both_have(&bird, &prefix4), "{}", bird.route(&prefix4));

    // SIGTERM: both families withdrawn and Cease on both sessions before the daemon exits.
    assert_eq!(daemon.stop_with(libc::SIGTERM).expect("exits"), Some(0));
    assert!(
        none_has(&bird, &prefix6) && none_has(&bird, &prefix4),
        "withdrawn by the time the daemon exited: {}{}",
        bird.route(&prefix6),
        bird.route(&prefix4)
    );
    let log = bird.log();
    for proto in [OVER4, OVER6] {
        assert!(
            log.contains(&format!("{proto}: Received: Administrative shutdown")),
            "{proto} got NOTIFICATION Cease: {log}"
        );
    }
    drop((servers, servers4));
    let _ = std::fs::remove_dir_all(dir);
}
